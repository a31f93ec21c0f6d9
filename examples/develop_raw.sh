#!/usr/bin/env bash
# Develop a folder of camera RAW files (DNG, CR2, NEF, ARW, RAF, ORF, ...) into 16-bit TIFFs,
# then make 8-bit JPEG previews of the same files. Files LibRaw cannot read are reported on
# stderr with the reason and the rest go on; the exit code is 1 if any failed.
# Usage: examples/develop_raw.sh RAW_DIR [OUT_DIR]
set -euo pipefail
raw_dir=${1:?usage: develop_raw.sh RAW_DIR [OUT_DIR]}
out_dir=${2:-developed}

# LibRaw's pipeline (the learned one is selected with --engine network once its weights ship).
denoise raw2rgb "$raw_dir" -o "$out_dir/tiff/" --engine classic --wb camera
denoise raw2rgb "$raw_dir" -o "$out_dir/preview/" --engine classic --bits 8 --format jpg --quality 90
