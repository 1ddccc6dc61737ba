#!/usr/bin/env bash
# Vendor pre-deployment check: your ONNX face model, your photos, your protection.
#
#   examples/vendor_check.sh MODEL.onnx PHOTO_FOLDER [DEFENSE] [OUT_DIR]
#
# PHOTO_FOLDER holds one sub-folder of photos per person. The model gets aligned 112x112 RGB
# faces as (pixel - MEAN) / STD (defaults 127.5 and 128; set MEAN/STD/BGR for your model).
# Exit code: 0 when the gate passes, 1 when it fails, 2 on a usage error.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n 2,9p "$0"; exit 2
fi
model=$1; photos=$2; defense=${3:-noise}; out=${4:-vendor-check}
mean=${MEAN:-127.5}; std=${STD:-128}; bgr=${BGR:-0}
mkdir -p "$out"
cat > "$out/facepii.toml" <<TOML
[evaluate]
dataset = "folder:$photos"
encoder = "onnx:$model?mean=$mean&std=$std&bgr=$bgr"
defenses = ["$defense"]
budget = "${BUDGET:-standard}"
victims = ${VICTIMS:-0.25}

[gate]
max_leakage_ratio = ${MAX_LEAKAGE:-4.0}
max_sar = ${MAX_SAR:-0.05}
max_utility_drop = ${MAX_DROP:-0.1}
TOML
facepii gate --config "$out/facepii.toml" --junit "$out/gate.xml" --out "$out"
