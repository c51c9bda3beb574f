#!/usr/bin/env bash
# Create .venv with the pinned job stack, once. Safe to run again: it does nothing when the
# environment already matches requirements/*.txt and pyproject.toml.
#
# Horovod 0.28.1 ships as source only; it is compiled once (TensorFlow + Gloo, no MPI) and the
# wheel is kept in $SHOPREC_WHEEL_CACHE (default ~/.cache/shoprec/wheels), so later set-ups,
# fresh clones included, install it in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
WHEEL_CACHE=${SHOPREC_WHEEL_CACHE:-$HOME/.cache/shoprec/wheels}
HOROVOD_VERSION=0.28.1

fail() { echo "bootstrap: $*" >&2; exit 1; }

# --- Java: Spark 4 runs on Java 17 or newer --------------------------------------------------
if ! command -v java >/dev/null 2>&1; then
  fail "Java is not installed. Spark 4 needs Java 17+: on Debian/Ubuntu 'apt-get install openjdk-17-jre-headless', or set JAVA_HOME."
fi
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
if [ -z "$java_major" ] || [ "$java_major" -lt 17 ]; then
  fail "Java ${java_major:-unknown} found; Spark 4 needs Java 17+: 'apt-get install openjdk-17-jre-headless', or point JAVA_HOME at a JDK 17+."
fi

# --- Native BLAS: optional, but ALS is several times slower on the JVM's fallback --------------
if command -v ldconfig >/dev/null 2>&1 && ! ldconfig -p 2>/dev/null | grep -q 'liblapack\.so\.3 '; then
  echo "bootstrap: note: no native BLAS/LAPACK (liblapack.so.3); Spark's ALS will use its slower JVM fallback." \
       "For speed: 'apt-get install libopenblas0-pthread' (README \"train_als\")." >&2
fi

# --- Python 3.11 -----------------------------------------------------------------------------
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
[ -n "$PYTHON" ] || fail "Python 3.11 is needed (TensorFlow 2.15 and Horovod 0.28.1 wheels): install python3.11 or set PYTHON=/path/to/python3.11."

stamp_inputs="requirements/jobs.txt requirements/dev.txt pyproject.toml scripts/bootstrap.sh"
stamp="$VENV/.shoprec-$(cat $stamp_inputs | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade "pip>=24" wheel "setuptools>=68"
echo "bootstrap: installing the pinned stack (requirements/jobs.txt, requirements/dev.txt)"
$PIP install --quiet -r requirements/jobs.txt -r requirements/dev.txt

# --- Horovod, from the wheel cache or built once ----------------------------------------------
pyver=$("$VENV/bin/python" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
wheel=$(ls "$WHEEL_CACHE"/horovod-$HOROVOD_VERSION-$pyver-*.whl 2>/dev/null | head -n1 || true)
if [ -z "$wheel" ]; then
  command -v g++ >/dev/null 2>&1 || fail "building Horovod needs a C++ compiler: 'apt-get install g++'."
  echo "bootstrap: building Horovod $HOROVOD_VERSION with TensorFlow and Gloo (a few minutes, once)"
  mkdir -p "$WHEEL_CACHE"
  $PIP install --quiet "cmake>=3.13,<4"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 \
  HOROVOD_WITHOUT_MXNET=1 PATH="$PWD/$VENV/bin:$PATH" \
    $PIP wheel --quiet --no-build-isolation --no-deps -w "$WHEEL_CACHE" "horovod==$HOROVOD_VERSION"
  wheel=$(ls "$WHEEL_CACHE"/horovod-$HOROVOD_VERSION-$pyver-*.whl | head -n1)
fi
$PIP install --quiet "$wheel"
TF_CPP_MIN_LOG_LEVEL=2 "$VENV/bin/python" -c 'import horovod.tensorflow as hvd; assert hvd.gloo_built(), "Horovod built without Gloo"' \
  || fail "Horovod does not import with TensorFlow; remove $WHEEL_CACHE/horovod-* and run again to rebuild it."

$PIP install --quiet --no-deps -e .
rm -f "$VENV"/.shoprec-*
touch "$stamp"
echo "bootstrap: $VENV is ready"
