#!/usr/bin/env bash
# Regenerate the quality reports under docs/ for a model (default: the bundled one).
#   bash scripts/eval_all.sh [MODEL] [SHARED_DATA] [OUT_DIR]
# Writes OUT_DIR/eval_<set>.md/.png for every test set (default k), the STE ablation
# OUT_DIR/ablation/k<k>_<set>.md for k = 0 and k = K on TNO and RoadScene, and
# OUT_DIR/ablation/tokenizer_recon.md (tokenizer round trip PSNR/SSIM). OUT_DIR defaults to docs.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-default}
DATA=${2:-../shared/data}
OUT=${3:-docs}
PY=${PY:-.venv/bin/python}
# the checkpoint behind MODEL ("default" = the bundled one), for K and the tokenizer round trip
CKPT=$MODEL
[ "$MODEL" = default ] && CKPT=$($PY -c 'import tokfuse_rt; print(tokfuse_rt.default_model_path())')
K=$($PY -c 'import json, sys; from tokfuse_rt.model.checkpoint import read_metadata
print(json.loads(read_metadata(sys.argv[1])["config"])["num_tokens"])' "$CKPT")
mkdir -p "$OUT/ablation"
for s in TNO RoadScene MSRS Harvard_MRI_CT Harvard_MRI_PET Harvard_MRI_SPECT; do
  $PY -m tokfuse_rt.cli eval --engine "$MODEL" --set "$DATA/test/$s" -q --out "$OUT/eval_$s.md"
done
for s in TNO RoadScene; do
  for k in 0 "$K"; do
    $PY -m tokfuse_rt.cli eval --engine "$MODEL" --set "$DATA/test/$s" --k "$k" -q --no-figure \
      --out "$OUT/ablation/k${k}_$s.md"
  done
done
$PY scripts/tokenizer_recon.py --ckpt "$CKPT" --data "$DATA" \
  --json "$OUT/ablation/tokenizer_recon.json" > "$OUT/ablation/tokenizer_recon.md"
