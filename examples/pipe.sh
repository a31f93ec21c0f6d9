#!/usr/bin/env bash
# denoise as a filter: read an image on stdin, write the result on stdout.
# Usage: examples/pipe.sh < noisy.png > clean.png
set -euo pipefail
denoise denoise - -o - --format png --quiet
