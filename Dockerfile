# One image, two processes: `percorso api` (the default) or `percorso consume`.
# Build: docker build -t percorso .
# Run:   docker run -e PERCORSO_ENVIRONMENT=production -e PERCORSO_DATABASE_URL=... \
#          -e PERCORSO_KAFKA_BOOTSTRAP_SERVERS=... -e PERCORSO_KAFKA_REPLICATION_FACTOR=3 \
#          -e PERCORSO_SECRET_KEY=... -p 8000:8000 percorso
# Migrations: docker run ... percorso migrate   (run once per release, before the API starts)

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/percorso
COPY pyproject.toml README.md constraints.txt ./
COPY app ./app
# Production dependencies only (no embedded servers, no test tools), at the tested versions.
RUN /opt/percorso/bin/pip install -c constraints.txt .

FROM python:3.11-slim AS runtime
ENV PATH=/opt/percorso/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PERCORSO_HTTP_HOST=0.0.0.0 \
    PERCORSO_HTTP_PORT=8000 \
    PERCORSO_PIPELINE_METRICS_PORT=8000
RUN groupadd --system percorso && useradd --system --gid percorso --home /srv percorso
WORKDIR /srv
COPY --from=build /opt/percorso /opt/percorso
COPY alembic.ini ./
COPY migrations ./migrations
USER percorso
EXPOSE 8000
# Checks the process the container runs, on the ports its settings name: `api` answers
# /healthz, `consume` its metrics (port 8000 as well, set above); `migrate` and the others pass.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["percorso", "healthcheck"]
ENTRYPOINT ["percorso"]
CMD ["api"]
