#!/usr/bin/env bash
# Pack the job environment (requirements/jobs.txt and the cached Horovod wheel, without the
# shoprec package itself, which ships as shoprec.zip) into DIST/shoprec-env.tar.gz for executors
# that lack it: spark-submit --archives DIST/shoprec-env.tar.gz#environment
#   --conf spark.pyspark.python=./environment/bin/python
# The archive is a venv (venv-pack): its Python links to the interpreter this machine's venvs use
# (python3.11 at the same path), so the cluster nodes need that Python installed where it is here,
# or PYTHON_PREFIX=/usr (say) names where it is on the nodes.
# Building it takes minutes (pip, then gzip): the archive is kept in $SHOPREC_ENV_CACHE (default
# ~/.cache/shoprec/envs) under a key of what goes into it (requirements/jobs.txt, the Horovod
# wheel, the Python, PYTHON_PREFIX and this script), and a later run with the same key copies it.
# SHOPREC_REBUILD_ENV=1 builds afresh (say, to pick up newer releases within the requirements' ranges).
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${1:-dist}
WHEEL_CACHE=${SHOPREC_WHEEL_CACHE:-$HOME/.cache/shoprec/wheels}
ENV_CACHE=${SHOPREC_ENV_CACHE:-$HOME/.cache/shoprec/envs}
PYTHON=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT

wheel=$(ls "$WHEEL_CACHE"/horovod-0.28.1-*.whl 2>/dev/null | head -n1 || true)
[ -n "$wheel" ] || { echo "package-env: no Horovod wheel in $WHEEL_CACHE: run 'make setup' first" >&2; exit 1; }

archive="$DIST/shoprec-env.tar.gz"
# (This script by its path from the repository root: "$0" may be relative to where it was started.)
key=$({ cat requirements/jobs.txt scripts/package_env.sh; sha256sum "$wheel"; "$PYTHON" -VV; echo "$PYTHON ${PYTHON_PREFIX:-}"; } \
      | sha256sum | cut -c1-16)
cached="$ENV_CACHE/shoprec-env-$key.tar.gz"
mkdir -p "$DIST"
if [ -f "$cached" ] && [ -z "${SHOPREC_REBUILD_ENV:-}" ]; then
  cp "$cached" "$archive.tmp" && mv "$archive.tmp" "$archive"
  echo "package-env: $archive ($(du -h "$archive" | cut -f1)), built before from the same requirements: $cached"
  exit 0
fi

echo "package-env: building the job environment with $PYTHON"
"$PYTHON" -m venv "$BUILD/env"
"$BUILD/env/bin/python" -m pip install --quiet --upgrade "pip>=24"
"$BUILD/env/bin/python" -m pip install --quiet -r requirements/jobs.txt "$wheel"
rm -f "$archive"
# Executors run the cluster's Spark: pyspark's own jars would only double the archive.
.venv/bin/venv-pack --quiet -p "$BUILD/env" -o "$BUILD/shoprec-env.tar.gz" \
  --exclude "lib/python3.11/site-packages/pyspark/jars/*" ${PYTHON_PREFIX:+--python-prefix "$PYTHON_PREFIX"}
# Into the cache first, whole (an interrupted copy never carries the key's name), replacing older builds.
mkdir -p "$ENV_CACHE"
cp "$BUILD/shoprec-env.tar.gz" "$cached.tmp"
rm -f "$ENV_CACHE"/shoprec-env-*.tar.gz
mv "$cached.tmp" "$cached"
mv "$BUILD/shoprec-env.tar.gz" "$archive"
echo "package-env: $archive ($(du -h "$archive" | cut -f1)); kept as $cached"
