#!/usr/bin/env bash
# An MLflow tracking server with a PostgreSQL backend store, both on loopback.
#
#   scripts/mlflow_server.sh start   # initialise (once) and start PostgreSQL, then the MLflow server
#   scripts/mlflow_server.sh stop    # stop both
#   scripts/mlflow_server.sh status
#
# Settings (environment): MLFLOW_SERVER_DIR (default var/mlflow-server: the database cluster, the
# artifact store, logs and pid files), MLFLOW_PORT (5000), PG_PORT (5433),
# MLFLOW_ARTIFACTS_DESTINATION (default <dir>/artifacts; an s3:// URI works too, with AWS_* in the
# environment). The database password is generated once into <dir>/pgpass (mode 600) and reaches
# the server through PGPASSFILE: it is never on a command line, in a URI or in a log.
# PostgreSQL comes from Debian's postgresql package; as root the script installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=$(realpath -m "${MLFLOW_SERVER_DIR:-var/mlflow-server}")
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PG_PORT=${PG_PORT:-5433}
ARTIFACTS=${MLFLOW_ARTIFACTS_DESTINATION:-$DIR/artifacts}
MLFLOW=${MLFLOW:-$PWD/.venv/bin/mlflow}
PGDATA=$DIR/pgdata
DB_USER=shoprec
DB_NAME=mlflow

fail() { echo "mlflow-server: $*" >&2; exit 1; }

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
  if [ -z "$bin" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "mlflow-server: installing PostgreSQL (apt-get install postgresql)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
      bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
    else
      fail "PostgreSQL is not installed: 'apt-get install postgresql' (Debian/Ubuntu)"
    fi
  fi
  echo "$bin"
}

# PostgreSQL refuses to run as root: as root, the cluster belongs to the postgres user.
as_db_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_postgres() {
  local bin=$1
  mkdir -p "$DIR"
  if [ ! -f "$DIR/pgpass" ]; then
    umask 077
    password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
    echo "127.0.0.1:$PG_PORT:$DB_NAME:$DB_USER:$password" > "$DIR/pgpass"
    umask 022
  fi
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres: "$PGDATA"
    as_db_owner "$bin/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log"
  fi
  if ! as_db_owner "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_db_owner "$bin/pg_ctl" -D "$PGDATA" -w -l "$PGDATA/postgres.log" \
      -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PGDATA" start >/dev/null \
      || fail "PostgreSQL did not start; see $PGDATA/postgres.log"
  fi
  local password psql="$bin/psql -h $PGDATA -p $PG_PORT -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA"
  password=$(cut -d: -f5 "$DIR/pgpass")
  if [ -z "$(as_db_owner $psql -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ]; then
    # The password goes in on stdin, so no process listing shows it.
    echo "CREATE ROLE $DB_USER LOGIN PASSWORD '$password'" | as_db_owner $psql >/dev/null
  fi
  if [ -z "$(as_db_owner $psql -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ]; then
    as_db_owner $psql -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" >/dev/null
  fi
}

start_mlflow() {
  if [ -f "$DIR/mlflow.pid" ] && kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null; then
    echo "mlflow-server: already running (pid $(cat "$DIR/mlflow.pid")) on http://127.0.0.1:$MLFLOW_PORT"
    return
  fi
  [ -x "$MLFLOW" ] || fail "$MLFLOW not found: run 'make setup' first"
  case "$ARTIFACTS" in *://*) ;; *) mkdir -p "$ARTIFACTS" ;; esac
  PGPASSFILE="$DIR/pgpass" setsid "$MLFLOW" server \
    --backend-store-uri "postgresql://$DB_USER@127.0.0.1:$PG_PORT/$DB_NAME" \
    --artifacts-destination "$ARTIFACTS" --serve-artifacts \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 >"$DIR/mlflow.log" 2>&1 &
  echo $! > "$DIR/mlflow.pid"
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null 2>&1; then
      echo "mlflow-server: http://127.0.0.1:$MLFLOW_PORT (backend PostgreSQL on 127.0.0.1:$PG_PORT, artifacts $ARTIFACTS)"
      echo "  point the jobs at it: SHOPREC__MLFLOW__TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT SHOPREC__MLFLOW__ARTIFACT_LOCATION=''"
      return
    fi
    kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null || fail "the MLflow server exited; see $DIR/mlflow.log"
    sleep 1
  done
  fail "the MLflow server did not answer on port $MLFLOW_PORT within 120 s; see $DIR/mlflow.log"
}

stop_all() {
  if [ -f "$DIR/mlflow.pid" ]; then
    # setsid made the server its own process group: stop its workers with it.
    kill -- -"$(cat "$DIR/mlflow.pid")" 2>/dev/null || true
    rm -f "$DIR/mlflow.pid"
  fi
  if [ -f "$PGDATA/PG_VERSION" ]; then
    as_db_owner "$(pg_bin)/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  echo "mlflow-server: stopped"
}

case "${1:-start}" in
  start) start_postgres "$(pg_bin)"; start_mlflow ;;
  stop) stop_all ;;
  status)
    if [ -f "$DIR/mlflow.pid" ] && kill -0 "$(cat "$DIR/mlflow.pid")" 2>/dev/null; then
      echo "mlflow-server: running on http://127.0.0.1:$MLFLOW_PORT"
    else
      echo "mlflow-server: not running"; exit 3
    fi ;;
  *) fail "usage: $0 start|stop|status" ;;
esac
