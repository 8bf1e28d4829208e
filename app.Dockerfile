# The Streamlit app's image, for Azure Container Apps (or App Service): app.py, pages/, ui/, lib/ and
# the shared code it imports from service/, served by Streamlit on 0.0.0.0:$STREAMLIT_PORT (8501).
#
# Build context: the repository root (.dockerignore admits only what the app runs). Here:
#   scripts/container.sh app     (podman, on the Debian base image it makes)
# In Azure: az acr build --file app.Dockerfile . (the default base below).
#
# Each browser session, and its secret key, lives in ONE app process: scaled out, the app needs
# session affinity (sticky sessions) so a session always reaches the replica that holds its key;
# `python -m scripts.deploy deploy --with-app` sets it on the container app.
# No secret is built in: BLOB_CONNECTION_STRING, SCORING_URL and SCORING_KEY come from the
# environment at run time (Container Apps secrets).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PYTHON=python3.11
USER root
RUN set -eu; \
    if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$PYTHON" "$PYTHON-venv"; \
        apt-get clean; rm -rf /var/lib/apt/lists/*; \
    fi; \
    id -u app >/dev/null 2>&1 || useradd --system --uid 10002 --user-group --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

# Dependencies first (their own layer); encrypted-inference imported once as root (see service/Dockerfile).
COPY requirements.txt /app/requirements.txt
COPY service/requirements.txt /app/service/requirements.txt
RUN set -eu; \
    if [ -f /run/host-certs/ca-certificates.crt ]; then export PIP_CERT=/run/host-certs/ca-certificates.crt; fi; \
    "$PYTHON" -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-input -r /app/requirements.txt; \
    /opt/venv/bin/python -c "import encrypted.inference.eiclient, encrypted.inference.eiserver"

# The browser tab's code for the "Encrypt in my browser" mode, built from frontend/ by scripts/setup.sh
# (scripts/container.sh app runs it first; for az acr build, run scripts/setup.sh before).
COPY static/browser_encryption.js /app/static/browser_encryption.js
COPY .streamlit/config.toml /app/.streamlit/config.toml
COPY app.py /app/app.py
COPY pages /app/pages
COPY ui /app/ui
COPY lib /app/lib
COPY service /app/service
RUN /opt/venv/bin/python -m compileall -q /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STREAMLIT_PORT=8501 \
    HOME=/tmp
WORKDIR /app
USER 10002
EXPOSE 8501
CMD ["/bin/sh", "-c", "exec streamlit run app.py --server.address 0.0.0.0 --server.port \"${STREAMLIT_PORT}\" --server.headless true"]
