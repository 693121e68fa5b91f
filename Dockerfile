# syntax=docker/dockerfile:1
# One image for every Python service of the stack (docker-compose.yaml): the scoring service,
# ChatOps, the fleet simulator, Airflow (api-server, scheduler, dag-processor, triggerer) and
# the MLflow server. Compose picks the command; the default is the scoring service.
#
#   docker build -t smartcloudops:local .
#
# Stage 1 builds a virtual environment with the exact pins of constraints.txt; stage 2 copies
# only that environment, the DAG files and two small scripts onto a clean slim base, and runs
# as an unprivileged user.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A compiler only for a dependency without a wheel; it stays in this stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY smartcloudops ./smartcloudops
COPY ml ./ml
COPY serving ./serving
COPY remediation ./remediation
COPY chatops ./chatops
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install -c constraints.txt .

FROM python:3.11-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="SmartCloudOps AI" \
      org.opencontainers.image.description="AIOps: observe, learn, detect, act, explain" \
      org.opencontainers.image.licenses="Apache-2.0"
# libgomp: OpenMP runtime for scikit-learn's and Prophet's native code. Debian's security
# updates are wanted here, so the package is not pinned (the base image is).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 smartcloudops \
 && useradd --system --uid 10001 --gid smartcloudops --home-dir /var/lib/smartcloudops \
      --create-home --shell /usr/sbin/nologin smartcloudops \
 && install -d -o smartcloudops -g smartcloudops /opt/airflow /mlflow/artifacts
COPY --from=build /opt/venv /opt/venv
COPY dags /app/dags
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/smartcloudops-healthcheck
COPY --chmod=0755 deploy/docker/airflow-init.sh /usr/local/bin/airflow-init
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    SMARTCLOUDOPS_HOME=/var/lib/smartcloudops \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/app/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    HEALTHCHECK_URL=http://127.0.0.1:8080/healthz
WORKDIR /app
USER 10001:10001
EXPOSE 8080 8090 5000 9201-9205
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["smartcloudops-healthcheck"]
CMD ["smartcloudops", "serve", "--host", "0.0.0.0", "--port", "8080"]
