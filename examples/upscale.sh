#!/usr/bin/env bash
# Upscale every image in a folder 2x or 4x into another folder, keeping names, alpha and bit
# depth, and list each output's size from the JSON log.
# Usage: examples/upscale.sh [IN_DIR] [OUT_DIR] [SCALE]   (SCALE 2 or 4, default 2)
set -euo pipefail
in_dir=${1:-"$(dirname "$0")"}
out_dir=${2:-upscaled}
scale=${3:-2}

denoise sr "$in_dir" --scale "$scale" -o "$out_dir/" --json > upscale-log.jsonl
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("status") == "ok":
        print("%s: %dx%d (x%d)" % (r["output"], r["size"][0], r["size"][1], r["scale"]))
' upscale-log.jsonl
