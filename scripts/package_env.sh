#!/usr/bin/env bash
# Pack the job environment (requirements/jobs.txt and the cached Horovod wheel, without the
# shoprec package itself, which ships as shoprec.zip) into DIST/shoprec-env.tar.gz for executors
# that lack it: spark-submit --archives DIST/shoprec-env.tar.gz#environment
#   --conf spark.pyspark.python=./environment/bin/python
# The archive is a venv (venv-pack): its Python links to the interpreter this machine's venvs use
# (python3.11 at the same path), so the cluster nodes need that Python installed where it is here,
# or PYTHON_PREFIX=/usr (say) names where it is on the nodes.
set -euo pipefail
cd "$(dirname "$0")/.."

DIST=${1:-dist}
WHEEL_CACHE=${SHOPREC_WHEEL_CACHE:-$HOME/.cache/shoprec/wheels}
PYTHON=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
BUILD=$(mktemp -d)
trap 'rm -rf "$BUILD"' EXIT

wheel=$(ls "$WHEEL_CACHE"/horovod-0.28.1-*.whl 2>/dev/null | head -n1 || true)
[ -n "$wheel" ] || { echo "package-env: no Horovod wheel in $WHEEL_CACHE: run 'make setup' first" >&2; exit 1; }

echo "package-env: building the job environment with $PYTHON"
"$PYTHON" -m venv "$BUILD/env"
"$BUILD/env/bin/python" -m pip install --quiet --upgrade "pip>=24"
"$BUILD/env/bin/python" -m pip install --quiet -r requirements/jobs.txt "$wheel"
mkdir -p "$DIST"
rm -f "$DIST/shoprec-env.tar.gz"
# Executors run the cluster's Spark: pyspark's own jars would only double the archive.
.venv/bin/venv-pack --quiet -p "$BUILD/env" -o "$DIST/shoprec-env.tar.gz" \
  --exclude "lib/python3.11/site-packages/pyspark/jars/*" ${PYTHON_PREFIX:+--python-prefix "$PYTHON_PREFIX"}
echo "package-env: $DIST/shoprec-env.tar.gz ($(du -h "$DIST/shoprec-env.tar.gz" | cut -f1))"
