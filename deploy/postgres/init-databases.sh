#!/usr/bin/env bash
# Runs once, on the first start of an empty PostgreSQL volume (docker-entrypoint-initdb.d):
# one database and one role per component, so a leaked password opens one database only,
# plus grafana_reader, which may only SELECT from the event store.
set -euo pipefail

: "${AIRFLOW_DB_PASSWORD:?set AIRFLOW_DB_PASSWORD in .env}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env}"
: "${EVENTS_DB_PASSWORD:?set EVENTS_DB_PASSWORD in .env}"
: "${GRAFANA_DB_READER_PASSWORD:?set GRAFANA_DB_READER_PASSWORD in .env}"

# Passwords travel as psql variables (:'name' quotes them), never spliced into SQL text.
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  -v airflow_pw="$AIRFLOW_DB_PASSWORD" \
  -v mlflow_pw="$MLFLOW_DB_PASSWORD" \
  -v events_pw="$EVENTS_DB_PASSWORD" \
  -v reader_pw="$GRAFANA_DB_READER_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE smartcloudops LOGIN PASSWORD :'events_pw';
CREATE DATABASE smartcloudops OWNER smartcloudops;
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_pw';
REVOKE ALL ON DATABASE airflow, mlflow, smartcloudops FROM PUBLIC;
GRANT CONNECT ON DATABASE smartcloudops TO grafana_reader;
SQL

# The event store creates its tables on first use (smartcloudops/events.py), after this
# script: default privileges make each new table readable by grafana_reader.
psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname smartcloudops <<'SQL'
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO smartcloudops;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE smartcloudops IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
echo "created databases airflow, mlflow, smartcloudops and role grafana_reader"
