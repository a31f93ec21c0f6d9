#!/usr/bin/env bash
# Develop a folder of camera RAW files (DNG, CR2, NEF, ARW, RAF, ORF, ...) into 16-bit TIFFs,
# then make 8-bit JPEG previews of the same files. Files LibRaw cannot read are reported on
# stderr with the reason and the rest go on; the exit code is 1 if any failed.
# Usage: examples/develop_raw.sh RAW_DIR [OUT_DIR]
set -euo pipefail
raw_dir=${1:?usage: develop_raw.sh RAW_DIR [OUT_DIR]}
out_dir=${2:-developed}

# The learned pipeline (hyperisp); add --engine classic to both lines for LibRaw's own.
denoise raw2rgb "$raw_dir" -o "$out_dir/tiff/" --wb camera
denoise raw2rgb "$raw_dir" -o "$out_dir/preview/" --bits 8 --format jpg --quality 90
