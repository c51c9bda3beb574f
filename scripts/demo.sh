#!/usr/bin/env bash
# The whole pipeline on a synthetic shop log, with the embedded local defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
CONF=${1:-conf/local.yaml}
RUN_DATE=${2:-2026-01-08}
SHOPREC=.venv/bin/shoprec
export SPARK_LOG_LEVEL=WARN

echo "== 1/2 generate: a synthetic shop log (conf generate.*) into var/raw/synthetic"
$SHOPREC generate --conf "$CONF" --run-date "$RUN_DATE"
echo "== 2/2 clean_events: raw log -> events_clean + events_quarantine"
$SHOPREC run clean_events --conf "$CONF" --run-date "$RUN_DATE"

cat <<MSG

Done. Output tables (partitioned Parquet):
  $(pwd)/var/warehouse/events_clean        partitioned by event_date, ingest_batch
  $(pwd)/var/warehouse/events_quarantine   partitioned by ingest_batch (reason, detail, raw_record)
MLflow store: sqlite:///$(pwd)/var/mlflow.db, artifacts under $(pwd)/var/mlflow-artifacts
  Browse the runs:  make mlflow-ui   then open http://127.0.0.1:5000
MSG
