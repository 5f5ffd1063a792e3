#!/usr/bin/env bash
# The main job on a fresh machine, on the CPU: install into .venv (Python 3.11), render a small sample capture of a
# built-in Blender object with Blender itself (nothing to download), then reconstruct it headless through the real
# add-on (its operators, its client, the backend in a subprocess) and write a .blend, a coloured .ply and a render.
# Usage: bash scripts/demo.sh [OUT_DIR]    (default: out/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/demo}
source scripts/venv.sh
mkdir -p "$OUT"
echo "== rendering a sample capture with Blender (Cycles, CPU)"
"$VPY" scripts/render_capture.py --builtin suzanne --layout sphere --views 32 --size 160 --samples 16 \
    --out "$OUT/capture"
echo "== reconstructing it headless through the add-on (CPU preview)"
NEUSBLEND_PYTHON="$VPY" "$VPY" scripts/reconstruct_headless.py --images "$OUT/capture" \
    --out "$OUT/sample.blend" --out "$OUT/sample.ply" --render "$OUT/sample.png" --preset preview --device cpu \
    --steps 800 --max-image-size 160 --job-root "$OUT/jobs"
"$VPY" - "$OUT" <<'PY'
import sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("sample.blend", "sample.ply", "sample.png"):
    p = out / name
    print(f"{p}: {p.stat().st_size:,} bytes" if p.exists() else f"{p}: MISSING")
    if not p.exists():
        raise SystemExit(1)
PY
echo "== done: open $OUT/sample.blend in Blender, or look at $OUT/sample.png"
