#!/usr/bin/env bash
# Creates .venv with the pinned stack, building Horovod (TensorFlow + Gloo) from source.
# Idempotent: a stamp keyed on the inputs makes a second run with nothing changed a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
GPU=${GPU:-0}  # 1: the GPU TensorFlow build, and Horovod with NCCL when a CUDA toolkit (nvcc) is present

need() {  # need CMD "what it is" "how to install"
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "setup: missing prerequisite: $2 ('$1' not on PATH). Install it with: $3" >&2
    exit 1
  fi
}
need "$PY" "Python 3.11" "apt-get install python3.11 python3.11-venv python3.11-dev (or pyenv install 3.11)"
need java "Java 17 (for Spark)" "apt-get install openjdk-17-jdk-headless"
need g++ "a C++ compiler (to build Horovod)" "apt-get install g++ make"
need make "make" "apt-get install make"
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [ "${java_major:-0}" != "17" ]; then
  echo "setup: Java 17 is required by this stack, found Java '${java_major:-unknown}' ($(command -v java))." \
       "Install openjdk-17 and put it first on PATH or set JAVA_HOME." >&2
  exit 1
fi
py_ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$py_ver" != "3.11" ]; then
  echo "setup: Python 3.11 is required, '$PY' is $py_ver" >&2
  exit 1
fi

stamp="$VENV/.sparkvision-setup"
want=$( (cat constraints.txt setup.py scripts/setup_env.sh; echo "GPU=$GPU") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/sparkvision" ]; then
  echo "setup: $VENV is up to date"
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --quiet -c constraints.txt)
# The machine's pip config lists local mirrors that do not carry every package; pip warns
# once per package about them. Keep real errors, drop that noise.
quiet() {
  set +e
  "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}
# petastorm 0.13.1 requires setuptools<70 (pip reports a conflict otherwise)
quiet "${pip[@]}" --upgrade "pip<25" "setuptools<70" wheel
echo "setup: installing TensorFlow and build tools"
hvd_built=gloo_built
if [ "$GPU" = 1 ]; then
  # Same version as tensorflow-cpu (constraints.txt), built with CUDA; it replaces the CPU build.
  "$VENV/bin/python" -m pip uninstall --quiet -y tensorflow-cpu >/dev/null 2>&1 || true
  quiet "${pip[@]}" "tensorflow[and-cuda]==2.15.1" numpy cmake
  if command -v nvcc >/dev/null 2>&1; then
    echo "setup: GPU=1: CUDA toolkit found ($(command -v nvcc)): Horovod averages gradients with NCCL"
    export HOROVOD_GPU_OPERATIONS=NCCL
    hvd_built=nccl_built
    "$VENV/bin/python" -c 'import horovod.tensorflow as h; assert h.nccl_built()' >/dev/null 2>&1 \
      || "$VENV/bin/python" -m pip uninstall --quiet -y horovod >/dev/null 2>&1 || true
  else
    echo "setup: GPU=1: no CUDA toolkit (nvcc not on PATH): Horovod with Gloo only (gradients averaged on the CPU)"
  fi
else
  quiet "${pip[@]}" tensorflow-cpu numpy cmake
fi
if ! "$VENV/bin/python" -c "import horovod.tensorflow as h; assert h.$hvd_built()" >/dev/null 2>&1; then
  echo "setup: building Horovod with TensorFlow + Gloo${HOROVOD_GPU_OPERATIONS:+ + NCCL} (about 3 minutes on 2 cores)"
  PATH="$PWD/$VENV/bin:$PATH" \
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=gloo \
  MAKEFLAGS=-j"$(nproc)" \
    quiet "${pip[@]}" --no-cache-dir --no-build-isolation "horovod[spark]"
fi
echo "setup: installing sparkvision and the rest of the stack"
quiet "${pip[@]}" -e ".[dev]"
if [ "$GPU" = 1 ]; then  # setup.py asks for tensorflow-cpu: put the GPU build's files back over it
  "$VENV/bin/python" -m pip uninstall --quiet -y tensorflow-cpu
  quiet "${pip[@]}" --force-reinstall --no-deps "tensorflow==2.15.1"
fi
TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" - <<'PY'  # no TensorFlow banner in the check
import horovod.tensorflow as hvd
assert hvd.gloo_built(), "Horovod was built without Gloo"
import tensorflow as tf, pyspark, petastorm, mlflow, pyarrow
print(f"setup: ok tensorflow {tf.__version__}, pyspark {pyspark.__version__}, petastorm {petastorm.__version__}, "
      f"mlflow {mlflow.__version__}, pyarrow {pyarrow.__version__}")
PY
echo "$want" > "$stamp"
