"""The local twin of a managed endpoint: nginx in front of N scoring replicas, as Azure ML puts one in
front of a deployment's instances.

nginx (Debian's package, installed by scripts/setup.sh) runs from a config generated into
``STACK_DIR/nginx/`` with everything it writes there too (pid, temp files, access log; its error log
goes to the service log, ``STACK_DIR/nginx.log``), and listens on 127.0.0.1 only. It

- checks ``Authorization: Bearer <SCORING_KEY>`` on every path when a key is set (401 without a
  key, 403 with another one); the key is in ``auth.conf`` (mode 0600) and in no log, message or repr;
- reads each request body whole before it picks a replica, and cuts off a client that stalls while
  sending its headers or body, so a slow client holds an nginx connection, never a replica's thread;
- balances across the replicas (``least_conn``) with timeouts, and sends a request on to another
  replica when the first one cannot be reached or dies before it answers;
- answers its own errors in the contract's JSON shape ``{"error": code, "message": text}``;
- names the replica that answered in the ``X-Replica`` response header (``host:port``; after a
  retry, every one tried, comma-separated).

The replicas are ordinary scoring services (scripts/local_stack/services.py), each a gunicorn on a
free loopback port with its own process group and log. They share nothing but blob storage.
"""

from __future__ import annotations

import dataclasses
import grp
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .config import HOST, PORT_ENV, StackError, scoring_base_url
from .net import HttpAnswer, HttpProbe
from .process import Service

NGINX_BIN = Path("/usr/sbin/nginx")
ERROR_URI = "/_twin_error/"  # nginx's own error pages: internal locations, not reachable from outside
NGINX_DIR = "nginx"  # under STACK_DIR: the prefix, the config, nginx's own pid file, temp files, access log
SETUP_HINT = "run scripts/setup.sh (it installs Debian's nginx)"

# Endpoint keys: base64 and URL-safe tokens (what Azure issues, what `secrets.token_urlsafe` makes).
# Nothing that nginx's config syntax could read as a quote, a variable or a separator.
_KEY_RE = re.compile(r"^[A-Za-z0-9+/=._~-]{16,256}$")


def check_scoring_key(key: str) -> str:
    """The key if nginx can check it; :class:`StackError` (never quoting the key) otherwise."""
    if not _KEY_RE.match(key):
        raise StackError(
            f"SCORING_KEY ({len(key)} characters) must be 16 to 256 letters, digits or + / = . _ ~ - "
            "(e.g. from: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key


def replica_name(index: int) -> str:
    """``replica-1``, ``replica-2``, ...: the pid-file and log name of replica ``index`` (from 1)."""
    return f"replica-{index}"


@dataclasses.dataclass(frozen=True)
class TwinLimits:
    """What nginx allows a client (defaults: the service's MAX_REQUEST_MB and the deployment's
    request_timeout_ms in deploy/azureml/blue-deployment.yml)."""

    max_body_mb: float = 4.0  # = the service's MAX_REQUEST_MB: larger bodies get nginx's 413
    client_timeout_s: float = 10.0  # a client silent this long while sending headers or body: 408/closed
    connect_timeout_s: float = 2.0  # to a replica, on loopback
    read_timeout_s: float = 60.0  # a replica silent this long: 504
    fail_timeout_s: float = 2.0  # a replica that failed is skipped this long (whole seconds)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TwinLimits:
        """The body limit follows the service's own MAX_REQUEST_MB when it is set."""
        raw = env.get("MAX_REQUEST_MB", "").strip()
        try:
            mb = float(raw) if raw else cls.max_body_mb
        except ValueError:
            raise StackError(f"MAX_REQUEST_MB={raw!r} is not a number") from None
        if mb <= 0:
            raise StackError(f"MAX_REQUEST_MB={raw!r} must be positive")
        return cls(max_body_mb=mb)


# nginx's own answers, in the contract's shape. Each message says what happened and what to do.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", ("The gateway could not parse the HTTP request (request line or headers malformed or too "
          "large): send a well-formed HTTP/1.1 request with a JSON body.")),
    401: ("unauthorized", ("This endpoint needs a key: send the header 'Authorization: Bearer <key>' (the app and "
          "lib.cli send SCORING_KEY).")),
    403: ("forbidden", "The endpoint key was refused: set SCORING_KEY to the endpoint's current key."),
    404: ("not_found", "No such path here: score with POST /score; GET / is the health check."),
    405: ("method_not_allowed", ("This method is not allowed here: score with POST /score; GET / is the health "
          "check.")),
    408: ("request_timeout", ("The request did not arrive in time (the gateway waits {client_timeout} s between "
          "reads): send the whole request at once.")),
    413: ("too_large", ("The request body is over {max_body} MB (the service's MAX_REQUEST_MB): send one image's "
          "ciphertexts per request.")),
    414: ("too_large", "The request URI is too long: score with POST /score and put the request in the body."),
    500: ("gateway_error", ("The gateway failed to handle the request: retry; if it persists, see nginx.log in the "
          "local stack's STACK_DIR.")),
    502: ("upstream_unavailable", ("No scoring replica could answer (they are down or restarting): retry in a few "
          "seconds; if it persists, restart the local stack.")),
    503: ("overloaded", "The scoring service is overloaded: retry in a few seconds."),
    504: ("upstream_timeout", ("The scoring replica did not answer within {read_timeout} s: retry; if it persists, "
          "the service is overloaded.")),
}  # fmt: skip


def _seconds(value: float) -> str:
    return f"{value:g}"


def _duration(seconds: float) -> str:
    """An nginx time value (it takes no fractions of a second: 1.5 s is 1500ms)."""
    return f"{round(seconds * 1000)}ms"


def error_body(status: int, limits: TwinLimits) -> str:
    """nginx's JSON body for ``status``."""
    code, message = ERRORS[status]
    message = message.format(client_timeout=_seconds(limits.client_timeout_s), max_body=_seconds(limits.max_body_mb),
                             read_timeout=_seconds(limits.read_timeout_s))  # fmt: skip
    return json.dumps({"error": code, "message": message}, separators=(", ", ": "))


_UNSAFE_PATH_RE = re.compile(r"[\"'$\\\x00-\x1f]")


def _quoted(path: Path) -> str:
    """A path as an nginx string (spaces allowed; :func:`nginx_conf` refuses what could break out)."""
    return f'"{path}"'


def nginx_user() -> str:
    """The ``user`` line: when root starts nginx, its worker drops to nobody (it writes no file)."""
    if os.geteuid() != 0:
        return ""  # nginx ignores (and warns about) ``user`` unless it starts as root
    try:
        grp.getgrnam("nogroup")
        group = "nogroup"  # Debian's
    except KeyError:
        group = "nobody"
    return f"user nobody {group};  # root starts nginx: its worker drops to nobody (it writes no file)\n"


def _nginx_string(text: str) -> str:
    """``text`` as a single-quoted nginx string (JSON bodies: no variables inside, quotes escaped)."""
    if "$" in text:
        raise ValueError("nginx would expand a '$' in a string")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def auth_conf(key: str | None) -> str:
    """The key check (included in ``location /``, i.e. every path): 401 without the header, 403 with another.

    An exact, case-sensitive comparison (``if`` with ``=`` / ``!=``; a ``map`` would match strings
    ignoring case).
    """
    if not key:
        return "# No SCORING_KEY was set: the twin accepts requests without a key.\n"
    check_scoring_key(key)
    return (
        "# The endpoint key (SCORING_KEY), checked on every path. Generated; mode 0600.\n"
        'if ($http_authorization = "") { return 401; }\n'
        f'if ($http_authorization != "Bearer {key}") {{ return 403; }}\n'
    )


def nginx_conf(
    prefix: Path, port: int, replica_ports: Sequence[int], limits: TwinLimits | None = None, *, keyed: bool = False
) -> str:
    """nginx.conf for the twin: listen on 127.0.0.1:``port``, balance over ``replica_ports``.

    ``keyed``: include ``auth.conf`` (the key check). All paths are under ``prefix``.
    """
    if not replica_ports:
        raise StackError("the twin needs at least one replica")
    if _UNSAFE_PATH_RE.search(str(prefix)):
        raise StackError(f"nginx's config cannot name {prefix}: choose a STACK_DIR without quotes, '$', '\\' or "
                         "control characters")  # fmt: skip
    q = _quoted
    limits = limits or TwinLimits()
    body_bytes = int(limits.max_body_mb * 1024 * 1024)
    user = nginx_user()
    servers = "\n".join(
        f"        server {HOST}:{p} max_fails=1 fail_timeout={max(1, math.ceil(limits.fail_timeout_s))}s;" for p in replica_ports
    )
    # Error pages by URI, not named locations: a request whose request line nginx could not parse has
    # no URI, and nginx cannot redirect such a request to a named location (it would answer 500 HTML).
    pages = "\n".join(f"        error_page {status} {ERROR_URI}{status};" for status in ERRORS)
    pages += f"\n        error_page 494 =400 {ERROR_URI}400;  # headers too large: nginx answers it as a 400"
    locations = "\n".join(
        f"        location = {ERROR_URI}{status} {{\n"
        "            internal;\n"
        "            types { }\n"
        "            default_type application/json;\n"
        + ("            add_header WWW-Authenticate 'Bearer' always;\n" if status == 401 else "")
        + f"            return {status} {_nginx_string(error_body(status, limits))};\n"
        "        }"
        for status in ERRORS
    )
    auth = f"            include {q(prefix / 'auth.conf')};\n" if keyed else ""
    timeout = _duration(limits.client_timeout_s)
    return f"""\
# The local twin of a managed endpoint: generated by scripts/local_stack at each start; do not edit.
# Started as: nginx -p {prefix}/ -c {prefix / 'nginx.conf'} -e stderr -g 'daemon off;'
{user}worker_processes 1;
pid {q(prefix / 'nginx.pid')};
error_log stderr warn;  # the service log: STACK_DIR/nginx.log

events {{
    worker_connections 1024;
}}

http {{
    # What is logged: never the Authorization header (nor any other request header).
    log_format twin '$remote_addr [$time_local] "$request" $status $body_bytes_sent '
                    'request_time=$request_time replica=$upstream_addr replica_status=$upstream_status '
                    'replica_time=$upstream_response_time';
    access_log {q(prefix / 'access.log')} twin;
    server_tokens off;
    client_body_temp_path {q(prefix / 'client_body_temp')};
    proxy_temp_path {q(prefix / 'proxy_temp')};
    fastcgi_temp_path {q(prefix / 'fastcgi_temp')};
    uwsgi_temp_path {q(prefix / 'uwsgi_temp')};
    scgi_temp_path {q(prefix / 'scgi_temp')};

    # Request bodies: read whole, in memory, before a replica is chosen (so a slow client never
    # holds a replica's thread); over the service's MAX_REQUEST_MB is nginx's 413.
    client_max_body_size {body_bytes};
    client_body_buffer_size {body_bytes};
    # A client silent this long while sending its headers or body is cut off here (408 or closed).
    client_header_timeout {timeout};
    client_body_timeout {timeout};
    send_timeout 30s;
    keepalive_timeout 30s;

    upstream scoring_replicas {{
        least_conn;
{servers}
    }}

    server {{
        listen {HOST}:{port};
        server_name _;

{pages}

        location / {{
{auth}            proxy_pass http://scoring_replicas;
            proxy_request_buffering on;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header Authorization "";  # the key stops here: replicas never see it
            proxy_connect_timeout {_duration(limits.connect_timeout_s)};
            proxy_send_timeout 30s;
            proxy_read_timeout {_duration(limits.read_timeout_s)};
            # A replica that cannot be reached, or dies before its answer's headers, gets the request
            # sent on to another one, POST included (non_idempotent): scoring is a pure function of
            # the request (ciphertexts + public keys), so computing it twice can change nothing and a
            # second answer is as right as the first. Not on timeouts (the work may still be running)
            # and not on a replica's own answers (its 4xx/5xx, e.g. 502 storage_unavailable, pass through).
            proxy_next_upstream error non_idempotent;
            proxy_next_upstream_tries 2;
            proxy_next_upstream_timeout {_duration(limits.read_timeout_s)};
            # Answers (up to ~4 MB, e.g. ei's ~3 MB) buffered in memory; never a temp file.
            proxy_buffering on;
            proxy_buffer_size 64k;
            proxy_buffers 64 64k;
            proxy_busy_buffers_size 256k;
            proxy_max_temp_file_size 0;
            add_header X-Replica $upstream_addr always;  # which replica answered (not secret)
        }}

{locations}
    }}
}}
"""


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def write_nginx_config(
    stack_dir: Path, port: int, replica_ports: Sequence[int], key: str | None, limits: TwinLimits | None = None
) -> Path:
    """Write ``STACK_DIR/nginx/nginx.conf`` and ``auth.conf`` (both 0600); return the prefix directory."""
    prefix = Path(stack_dir).resolve() / NGINX_DIR
    conf, auth = nginx_conf(prefix, port, replica_ports, limits, keyed=bool(key)), auth_conf(key)  # checks first
    prefix.mkdir(parents=True, exist_ok=True)
    os.chmod(prefix, 0o700)
    _write_private(prefix / "auth.conf", auth)
    _write_private(prefix / "nginx.conf", conf)
    return prefix


def nginx_probes(port: int, key: str | None) -> tuple[HttpProbe, ...]:
    """Ready when ``GET /`` through nginx (with the key) reaches a replica that says Healthy."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return (
        HttpProbe(
            f"{scoring_base_url(port)}/",
            ready=lambda a: a.status == 200 and b"healthy" in a.body.lower(),
            headers=headers,
        ),
    )


def _answers_json(answer: HttpAnswer) -> bool:
    """nginx answers: Healthy through a replica, or its own JSON 401/403 (a keyed twin, no key given)."""
    if answer.status == 200:
        return b"healthy" in answer.body.lower()
    if answer.status not in (401, 403) or "json" not in answer.content_type:
        return False
    try:
        body = answer.json()
    except ValueError:
        return False
    return isinstance(body, dict) and "error" in body


def nginx_status_probe(port: int, key: str | None) -> HttpProbe:
    """For ``status`` from another shell, which may not have the key: nginx answers, with or without it."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return HttpProbe(f"{scoring_base_url(port)}/", ready=_answers_json, headers=headers)


def nginx_service(
    stack_dir: Path,
    port: int,
    replica_ports: Sequence[int],
    key: str | None = None,
    *,
    limits: TwinLimits | None = None,
    log_path: Path | None = None,
    timeout: float = 30.0,
) -> Service:
    """nginx on 127.0.0.1:``port`` in front of the replicas on ``replica_ports``; config in STACK_DIR/nginx/."""
    if not NGINX_BIN.exists():
        raise StackError(f"{NGINX_BIN} is missing: {SETUP_HINT}")
    if key:
        check_scoring_key(key)
    prefix = write_nginx_config(stack_dir, port, replica_ports, key, limits)
    command = [
        str(NGINX_BIN), "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", "stderr", "-g", "daemon off;",
    ]  # fmt: skip
    log_path = Path(log_path) if log_path else Path(stack_dir) / "nginx.log"
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/bin")}  # nothing else: not the key, not a secret
    return Service(
        "nginx (the twin's gateway)", command, log_path, port, PORT_ENV["scoring"], env, nginx_probes(port, key),
        timeout,
    )  # fmt: skip
