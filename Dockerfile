# tako gateway image.
#   docker build -t tako-gateway .
#   docker run --rm -p 8000:8000 --env-file .env tako-gateway
# Build stage: compile the project and its runtime dependencies into a virtualenv.
# Final stage: python:3.11-slim + that virtualenv, no compilers, non-root user.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Compilers only here, for any dependency without a wheel on the target platform.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/tako
ENV PATH=/opt/tako/bin:$PATH
WORKDIR /src
# Dependencies first, keyed on pyproject.toml only, so code edits reuse this layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt
RUN pip install --upgrade pip wheel && pip install -r /tmp/requirements.txt
# Then the project itself, as a wheel (runtime deps only, no dev extras).
COPY README.md ./
COPY core ./core
COPY providers ./providers
COPY runtime ./runtime
COPY tools ./tools
COPY orchestrators ./orchestrators
COPY policies ./policies
COPY app ./app
COPY tako ./tako
RUN pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && pip install --no-deps /tmp/wheels/*.whl \
 && python -m compileall -q /opt/tako/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="tako-gateway" \
      org.opencontainers.image.description="OpenAI-compatible LLM gateway with multi-LLM orchestrators" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 tako \
 && useradd --system --uid 10001 --gid tako --home-dir /home/tako --create-home \
            --shell /usr/sbin/nologin tako \
 && mkdir -p /etc/tako /var/run/tako/metrics \
 && chown -R tako:tako /var/run/tako
COPY --from=builder /opt/tako /opt/tako
# Listen on every interface, on the port the image exposes and health-checks (env beats
# the config file, so change the port with TAKO_SERVER__PORT, not in the YAML). Worker
# processes come from the config (server.workers) or TAKO_SERVER__WORKERS.
ENV PATH=/opt/tako/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TAKO_SERVER__HOST=0.0.0.0 \
    TAKO_SERVER__PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/var/run/tako/metrics
USER 10001:10001
WORKDIR /home/tako
EXPOSE 8000
# Liveness only (the process answers); readiness (/readyz) is for load balancers.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TAKO_SERVER__PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
# tako drains in-flight requests (server.graceful_shutdown_s) on SIGTERM.
STOPSIGNAL SIGTERM
CMD ["tako", "serve"]
