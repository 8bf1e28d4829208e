#!/usr/bin/env bash
# THE demo command, on a fresh clone: installs what it needs (scripts/setup.sh), starts Azurite and the
# scoring service on 127.0.0.1, then the Streamlit app in the foreground. Ctrl-C stops everything.
# Ports: AZURITE_PORT (10000), SCORING_PORT (5001), STREAMLIT_PORT (8501); SCORING_WORKERS (2).
# SCORING_REPLICAS=N (default 0) runs the local twin of a managed endpoint instead: N scoring replicas
# behind nginx on SCORING_PORT, which checks the endpoint key SCORING_KEY; without one, a random key is
# made for this run (in $STACK_DIR/scoring_key, mode 0600) and given to the app.
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

SCORING_REPLICAS=${SCORING_REPLICAS:-0}
export SCORING_REPLICAS
scoring="the scoring service (:${SCORING_PORT})"
if [ "$SCORING_REPLICAS" != 0 ]; then
  scoring="${SCORING_REPLICAS} scoring replicas behind nginx (:${SCORING_PORT})"
  if [ -z "${SCORING_KEY:-}" ]; then
    STACK_DIR=${STACK_DIR:-.run}
    export STACK_DIR
    mkdir -p "$STACK_DIR"
    key_file="$STACK_DIR/scoring_key"
    rm -f "$key_file"
    (umask 077 && .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(32))" > "$key_file")
    SCORING_KEY=$(cat "$key_file")
    export SCORING_KEY
    echo "run_demo: nginx checks a new endpoint key for this run, in $key_file (the app has it; for lib.cli:"
    echo "run_demo:   SCORING_KEY=\$(cat $key_file))"
  fi
fi

echo "run_demo: starting Azurite (:${AZURITE_PORT}), ${scoring} and the app;"
echo "run_demo: when they are ready, open http://127.0.0.1:${STREAMLIT_PORT}"
exec .venv/bin/python -m scripts.local_stack run --app-port "$STREAMLIT_PORT" -- \
  .venv/bin/streamlit run app.py \
  --server.port "$STREAMLIT_PORT" --server.address 127.0.0.1 --server.headless true
