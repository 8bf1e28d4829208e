"""The scoring service's WSGI application, which gunicorn serves (service/gunicorn_config.py).

It is azureml-inference-server-http's own Flask app, the runtime of an Azure ML deployment: GET /
answers "Healthy", POST /score calls service/score.py's run(), with the server's request ids and
logging. Importing it loads the entry script and runs init() (AZUREML_ENTRY_SCRIPT,
AZUREML_MODEL_DIR). ``ContractErrors`` (service/errors.py) wraps it so that the errors the server
answers by itself (404 for an unknown path, 405 for PUT or DELETE, 400 for a body that is not
UTF-8, 500 if run() ever raised) have the contract's JSON shape too; successful responses pass
through untouched. It also answers, before the server sees them, the two inputs that would make
the server itself fail: GET /score (405) and a chunked body with broken framing (400).
"""
from __future__ import annotations

from azureml_inference_server_http.server.entry import app as azureml_app

from service.errors import ContractErrors
from service.settings import ServiceSettings, SettingsError


def _max_body_bytes() -> int:
    """MAX_REQUEST_MB, the most a chunked body may hold; init() itself refuses settings it cannot use."""
    try:
        return ServiceSettings.from_env().max_request_bytes
    except SettingsError:
        return 4 * 1024 * 1024


app = ContractErrors(azureml_app.wsgi_app, max_body_bytes=_max_body_bytes())
