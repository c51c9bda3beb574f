#!/usr/bin/env bash
# The whole pipeline on a synthetic shop log, with the embedded local defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
CONF=${1:-conf/local.yaml}
RUN_DATE=${2:-2026-01-08}
SHOPREC=.venv/bin/shoprec
export SPARK_LOG_LEVEL=WARN
STEPS=10

step() { echo "== $1/$STEPS $2"; }

# clean_events pseudonymizes user ids with an HMAC secret from the environment (README "Privacy").
# The demo keeps one in var/, readable by its owner only, so reruns give the same pseudonyms.
if [ -z "${SHOPREC_PSEUDONYM_SECRET:-}" ]; then
  mkdir -p var
  if [ ! -s var/pseudonym.secret ]; then
    (umask 077; .venv/bin/python -c "import secrets; print(secrets.token_hex(32))" > var/pseudonym.secret)
  fi
  SHOPREC_PSEUDONYM_SECRET=$(cat var/pseudonym.secret)
  export SHOPREC_PSEUDONYM_SECRET
fi

step 1 "generate: a synthetic shop log (conf generate.*) into var/raw/synthetic"
$SHOPREC generate --conf "$CONF" --run-date "$RUN_DATE"
step 2 "clean_events: raw log -> events_clean, events_bot (pseudonymous user ids) + events_quarantine, user_id_map (restricted)"
$SHOPREC run clean_events --conf "$CONF" --run-date "$RUN_DATE"
step 3 "build_profiles: interactions, user/item profiles, popular and content-similar items"
$SHOPREC run build_profiles --conf "$CONF" --run-date "$RUN_DATE"
step 4 "train_als: tune, train and register implicit ALS; als_recs, similar_items, cold_start"
$SHOPREC run train_als --conf "$CONF" --run-date "$RUN_DATE"
step 5 "mine_rules: FP-Growth over purchase baskets; assoc_rules, bought_together"
$SHOPREC run mine_rules --conf "$CONF" --run-date "$RUN_DATE"
step 6 "build_training_set: candidates, features and labels for the ranker, one shard per Horovod worker"
$SHOPREC run build_training_set --conf "$CONF" --run-date "$RUN_DATE"
step 7 "train_ranker: the deep ranker, trained with Horovod on the Spark executors, registered in MLflow"
$SHOPREC run train_ranker --conf "$CONF" --run-date "$RUN_DATE"
step 8 "score: rank every user's candidates with the ranker; recommendations with reasons"
$SHOPREC run score --conf "$CONF" --run-date "$RUN_DATE"
step 9 "search_rerank: the last days' searches matched to items by text, ordered per user by the search ranker where it beat the text order"
$SHOPREC run search_rerank --conf "$CONF" --run-date "$RUN_DATE"
step 10 "evaluate: backtest popularity, ALS, rules, content, the whole pipeline and search on the last days"
$SHOPREC run evaluate --conf "$CONF" --run-date "$RUN_DATE"

echo "== Querying the tables without Spark (shoprec query, DuckDB): evaluation at K=10"
$SHOPREC query --conf "$CONF" "SELECT model,
    round(max(value) FILTER (WHERE metric = 'ndcg'), 4) AS ndcg_at_10,
    round(max(value) FILTER (WHERE metric = 'hit_rate'), 4) AS hit_rate_at_10
  FROM eval_metrics WHERE run_date = DATE '$RUN_DATE' AND k = 10 GROUP BY model ORDER BY ndcg_at_10 DESC"

W=$(pwd)/var/warehouse
cat <<MSG

Done. Output tables (partitioned Parquet) under $W:
  events_clean                                 clean_events (by event_date/ingest_batch)
  events_bot                                   clean_events (bots' rows; by event_date/ingest_batch)
  interactions, user_profile, item_profile,
  popular_items, content_similar_items         build_profiles (by run_date)
  als_recs, similar_items, als_index, cold_start   train_als (by run_date)
  assoc_rules, bought_together                 mine_rules (by run_date)
  training_set                                 build_training_set (by run_date, split, shard)
  recommendations                              score (by run_date): the product
  search_results                               search_rerank (by run_date)
  eval_metrics                                 evaluate (by run_date)
Every user_id in them is a pseudonym (HMAC-SHA256, secret in var/pseudonym.secret unless
SHOPREC_PSEUDONYM_SECRET was set). The tables with real user ids are under $(pwd)/var/warehouse_restricted:
  user_id_map, events_quarantine               clean_events (by ingest_batch)
Query them with SQL:  .venv/bin/shoprec query "SELECT * FROM recommendations LIMIT 10"
  (the restricted ones: .venv/bin/shoprec query --restricted "SELECT * FROM events_quarantine LIMIT 10")
  or with Spark SQL, from the Hive catalog (database shoprec; docs/tables.md describes every column):
  PATH=\$PWD/.venv/bin:\$PATH spark-sql --conf spark.sql.catalogImplementation=hive \\
    --conf 'spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName=var/metastore_db' \\
    -e "SELECT * FROM shoprec.recommendations LIMIT 10"
Ranker checkpoints and saved models: $(pwd)/var/models/ranker/$RUN_DATE
MLflow store: sqlite:///$(pwd)/var/mlflow.db, artifacts under $(pwd)/var/mlflow-artifacts
  (registered models shoprec-als and shoprec-ranker, the tuning runs, learning curves, evaluation plots)
  Browse the runs:  make mlflow-ui   then open http://127.0.0.1:5000
MSG
