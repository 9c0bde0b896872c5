#!/usr/bin/env bash
# Regenerate the quality reports under docs/ for a model (default: the bundled one).
#   bash scripts/eval_all.sh [MODEL] [SHARED_DATA] [OUT_DIR]
# Writes, under OUT_DIR (default docs):
#   eval_<set>.md/.png        every test set at the default k, with the mean-rank table against the
#                             peer rows (docs/quality/peers_test.json) and the thermal share kept
#   quality/val_<set>.md      both val sets, mean rank against val/peer_scores.json
#   ablation/k<k>_<set>.md    STE ablation k = 0 and k = K on the test TNO and RoadScene sets
#   quality/ablation.md       k sweep, constant base map, tone from pixels, on val and test
#   ablation/tokenizer_recon  tokenizer round trip PSNR/SSIM on val and test
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-default}
DATA=${2:-../shared/data}
OUT=${3:-docs}
PY=${PY:-.venv/bin/python}
# the checkpoint behind MODEL ("default" = the bundled one), for K and the scripts
CKPT=$MODEL
[ "$MODEL" = default ] && CKPT=$($PY -c 'import tokfuse_rt; print(tokfuse_rt.default_model_path())')
K=$($PY -c 'import json, sys; from tokfuse_rt.model.checkpoint import read_metadata
print(json.loads(read_metadata(sys.argv[1])["config"])["num_tokens"])' "$CKPT")
mkdir -p "$OUT/ablation" "$OUT/quality"
for s in TNO RoadScene MSRS Harvard_MRI_CT Harvard_MRI_PET Harvard_MRI_SPECT; do
  $PY -m tokfuse_rt eval --model "$MODEL" --set "$DATA/test/$s" -q -o "$OUT/eval_$s.md" \
    --peers docs/quality/peers_test.json
done
for s in TNO RoadScene; do
  $PY -m tokfuse_rt eval --model "$MODEL" --set "$DATA/val/$s" -q --no-figure -o "$OUT/quality/val_$s.md" \
    --peers "$DATA/val/peer_scores.json"
  for k in 0 "$K"; do
    $PY -m tokfuse_rt eval --model "$MODEL" --set "$DATA/test/$s" --k "$k" -q --no-figure \
      -o "$OUT/ablation/k${k}_$s.md"
  done
done
$PY scripts/ablation.py --ckpt "$CKPT" --json "$OUT/quality/ablation.json" > "$OUT/quality/ablation.md"
$PY scripts/tokenizer_recon.py --ckpt "$CKPT" --data "$DATA" \
  --json "$OUT/ablation/tokenizer_recon.json" > "$OUT/ablation/tokenizer_recon.md"
