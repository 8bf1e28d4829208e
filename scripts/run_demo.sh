#!/usr/bin/env bash
# THE demo command, on a fresh clone: installs what it needs (scripts/setup.sh), starts Azurite and the
# scoring service on 127.0.0.1, then the Streamlit app in the foreground. Ctrl-C stops everything.
# Ports: AZURITE_PORT (10000), SCORING_PORT (5001), STREAMLIT_PORT (8501); SCORING_WORKERS (2).
# Nothing is trained here: the model artifact in service/model/ is committed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

if [ ! -f app.py ]; then
  echo "run_demo: app.py is missing; nothing to serve" >&2
  exit 1
fi

AZURITE_PORT=${AZURITE_PORT:-10000}
SCORING_PORT=${SCORING_PORT:-5001}
STREAMLIT_PORT=${STREAMLIT_PORT:-8501}
export AZURITE_PORT SCORING_PORT STREAMLIT_PORT

# Azurite's well-known development account (a public key, valid only against the local emulator).
export BLOB_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:${AZURITE_PORT}/devstoreaccount1;"
export SCORING_URL="http://127.0.0.1:${SCORING_PORT}/score"
export ALLOWED_BLOB_HOSTS=${ALLOWED_BLOB_HOSTS:-127.0.0.1:${AZURITE_PORT}}

echo "run_demo: starting Azurite (:${AZURITE_PORT}), the scoring service (:${SCORING_PORT}) and the app;"
echo "run_demo: when they are ready, open http://127.0.0.1:${STREAMLIT_PORT}"
exec .venv/bin/python -m scripts.local_stack run --app-port "$STREAMLIT_PORT" -- \
  .venv/bin/streamlit run app.py \
  --server.port "$STREAMLIT_PORT" --server.address 127.0.0.1 --server.headless true
