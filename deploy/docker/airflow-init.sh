#!/usr/bin/env bash
# One-shot Airflow initialisation for the compose stack: migrate the metadata database and
# give the simple auth manager the admin password from .env (instead of a generated one).
set -euo pipefail
: "${AIRFLOW_HOME:?AIRFLOW_HOME is not set}"
: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD in .env}"

airflow db migrate

passwords="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/passwords.json}"
umask 077
python - "$passwords" <<'PY'
import json, os, sys
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, out)
PY
echo "airflow: database migrated; admin password written to $passwords"
