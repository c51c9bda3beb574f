#!/usr/bin/env bash
# Create .airflow-venv with Airflow and the Spark provider, once (requirements/airflow.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AIRFLOW_VENV:-.airflow-venv}
PYTHON=${PYTHON:-python3.11}
stamp="$VENV/.shoprec-$(cat requirements/airflow.txt scripts/airflow_env.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "airflow-env: installing requirements/airflow.txt into $VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip>=24"
"$VENV/bin/python" -m pip install --quiet -r requirements/airflow.txt
rm -f "$VENV"/.shoprec-*
touch "$stamp"
