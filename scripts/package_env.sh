#!/usr/bin/env bash
# Builds what a cluster needs to run sparkvision:
#   dist/sparkvision-<version>-py3-none-any.whl   the package as a wheel
#   dist/sparkvision-env.tar.gz                   a packed venv (venv-pack) with that wheel
#                                                 installed non-editable, plus Horovod, TensorFlow, ...
# Ship the archive with `spark-submit --archives dist/sparkvision-env.tar.gz#env
# --conf spark.pyspark.python=./env/bin/python`.
#
# The environment is a fresh venv installed from constraints.txt, kept in the cache folder
# ($SPARKVISION_CACHE, default ~/.cache/sparkvision) under the hash of its dependencies, so a
# change of sparkvision's own files only re-installs the wheel. Horovod is not rebuilt: the build
# that `make setup` compiled into $VENV is re-packed as a wheel and installed.
# Archives are cached by content hash (dependencies, the package's files, this script):
# $SPARKVISION_CACHE/env/<hash>.tar.gz, so a second run with nothing changed, even from a fresh
# clone, is a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
CACHE=${SPARKVISION_CACHE:-$HOME/.cache/sparkvision}/env
DIST=dist
ARCHIVE=$DIST/sparkvision-env.tar.gz
unset PYTHONPATH  # the packed environment must find sparkvision in itself, never in this checkout

if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/venv-pack" ]; then
  echo "package: $VENV has no python or venv-pack; run 'make setup' first" >&2
  exit 1
fi

deps=$( { cat constraints.txt setup.py scripts/package_env.sh; "$PY" -c 'import sys; print(sys.version)'; } \
  | sha256sum | cut -c1-16)
key=$( { echo "$deps"; cat pyproject.toml
  find sparkvision -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort | xargs sha256sum
} | sha256sum | cut -c1-16)
cached=$CACHE/$key.tar.gz
env_venv=$CACHE/venv-$deps
mkdir -p "$CACHE" "$DIST"

if [ -f "$cached" ] && [ -f "$ARCHIVE" ] && [ "$(cat "$DIST/.sparkvision-env" 2>/dev/null)" = "$key" ] \
   && compgen -G "$DIST/sparkvision-*.whl" >/dev/null; then
  echo "package: $ARCHIVE is up to date ($key)"
  exit 0
fi

quiet() {  # as in setup_env.sh: drop the local mirrors' per-package warnings, keep real errors
  set +e
  "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

started=$SECONDS
echo "package: building the sparkvision wheel"
rm -rf "$DIST"/sparkvision-*.whl build/ sparkvision.egg-info
quiet "$VENV/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DIST" .
rm -rf build/ sparkvision.egg-info
wheel=$(ls "$DIST"/sparkvision-*.whl)

if [ ! -f "$cached" ]; then
  if [ ! -f "$env_venv/.sparkvision-deps" ]; then
    echo "package: re-packing the Horovod build of $VENV as a wheel"
    rm -rf "$DIST/wheels" && mkdir -p "$DIST/wheels"
    "$VENV/bin/python" - "$DIST/wheels" <<'PY'
"""Re-pack the installed Horovod (compiled by setup_env.sh) into a wheel, without rebuilding it."""
import shutil, subprocess, sys, tempfile
from importlib.metadata import distribution
from pathlib import Path

dist = distribution("horovod")
site = Path(dist.locate_file(""))
with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp) / f"horovod-{dist.version}"
    for entry in dist.files:
        src = site / entry
        if entry.parts[0] == ".." or "__pycache__" in entry.parts or not src.is_file():
            continue  # console scripts (pip recreates them from entry_points.txt), caches
        if entry.parts[0].endswith(".dist-info") and entry.name in {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}:
            continue
        dst = root / entry
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    subprocess.run([sys.executable, "-m", "wheel", "pack", str(root), "-d", sys.argv[1]], check=True,
                   stdout=subprocess.DEVNULL)
PY
    echo "package: installing the stack into a fresh venv $env_venv"
    rm -rf "$CACHE"/venv-*
    "$PY" -m venv "$env_venv"
    quiet "$env_venv/bin/python" -m pip install --quiet -c constraints.txt "$DIST"/wheels/horovod-*.whl "$wheel"
    echo "$deps" > "$env_venv/.sparkvision-deps"
  fi
  echo "package: installing $(basename "$wheel") non-editable into $env_venv"
  quiet "$env_venv/bin/python" -m pip install --quiet --no-deps --force-reinstall "$wheel"
  # -P: not the checkout's sparkvision/ from the working directory
  TF_CPP_MIN_LOG_LEVEL=2 "$env_venv/bin/python" -P - "$env_venv" <<'PY'
import sys
from pathlib import Path

prefix = Path(sys.argv[1]).resolve()
editable = sorted(p.name for p in prefix.glob("lib/python*/site-packages/*") if "__editable__" in p.name)
assert not editable, f"{prefix}: editable installs would point at this checkout: {editable}"
import horovod.tensorflow as hvd
import sparkvision

assert Path(sparkvision.__file__).resolve().is_relative_to(prefix), f"sparkvision from {sparkvision.__file__}"
assert hvd.gloo_built(), "Horovod in the packed environment was built without Gloo"
PY
  echo "package: packing $env_venv"
  # Executors need neither pyspark's jars (the cluster's Spark has its own, and puts its
  # pyspark.zip first on the Python workers' path) nor TensorFlow's C++ headers (500 MB), nor
  # the packages' own test suites (125 MB) or libclang's Python bindings (62 MB, used only to
  # build TensorFlow): each executor and the client-mode driver unpack the archive per job.
  site=lib/python3.11/site-packages
  "$VENV/bin/venv-pack" --quiet --force -p "$env_venv" -o "$cached.partial" --format tar.gz \
    --exclude "$site/pyspark/jars/*" --exclude "$site/tensorflow/include/*" --exclude "$site/*/tests/*" \
    --exclude "$site/clang/*" --exclude .sparkvision-deps
  chmod 644 "$cached.partial"
  mv "$cached.partial" "$cached"
  # keep the three newest archives
  ls -t "$CACHE"/*.tar.gz | tail -n +4 | xargs -r rm -f
fi

ln -f "$cached" "$ARCHIVE" 2>/dev/null || cp "$cached" "$ARCHIVE"
echo "$key" > "$DIST/.sparkvision-env"
echo "package: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1), $key) and $wheel in $((SECONDS - started)) s"
