#!/usr/bin/env bash
# Denoise every image under a folder (sub-folders too) into a mirrored tree.
# Rerunning after an interruption skips finished files (--on-exists skip is the default).
# Usage: examples/batch_folder.sh [IN_DIR] [OUT_DIR]
set -euo pipefail
in_dir=${1:-"$(dirname "$0")"}
out_dir=${2:-denoised}

# One JSON line per input goes to the log; progress and errors go to the terminal.
if denoise denoise "$in_dir" --recursive -o "$out_dir/" --json > denoise-log.jsonl; then
    echo "all images done: $(wc -l < denoise-log.jsonl) records in denoise-log.jsonl"
else
    status=$?
    echo "some inputs failed (exit $status):" >&2
    grep '"status": "failed"' denoise-log.jsonl >&2 || true
    exit "$status"
fi
