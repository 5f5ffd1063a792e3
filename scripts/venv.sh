# Sourced by demo.sh and test.sh: make .venv (Python 3.11) with torch (CPU build where it lies on disk) and the
# test requirements, and leave VPY pointing at its Python.
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (Blender bundles 3.11)"'
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY="$PWD/.venv/bin/python"
"$VPY" -m pip install -q --upgrade pip
# torch first and pinned: on machines that carry the CPU wheel locally this takes it instead of a CUDA build
"$VPY" -m pip install -q torch==2.13.0
"$VPY" -m pip install -q -r requirements-dev.txt
