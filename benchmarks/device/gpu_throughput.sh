#!/usr/bin/env bash
# One prepared call on a GPU machine (H100/H200), from the checkout root; under 10 minutes; its
# output goes to $OUT. Needs no download, no W&B and no sweep engine (synthetic data, W&B off).
#   bash benchmarks/device/gpu_throughput.sh          # 1. study throughput: sequential, 16
#                                                     #    processes, 4 workers, 4 workers packed
#                                                     # 2. single cell, Lightning vs plain loop:
#                                                     #    300 timed steps x 3 repeats, + ViT-S/16
#                                                     # 3. (GPU) strong vs basic recipe, augment_cost.py
#   CPU=1 bash benchmarks/device/gpu_throughput.sh    # the same steps, tiny, on a CPU (a check)
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 BENCH_CACHE=${BENCH_CACHE:-/tmp/bench-cache}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python -c "import torch, timm, pytorch_lightning as pl; print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', pl.__version__)" | tee "$OUT/env.txt"
if [ "${CPU:-0}" = 1 ]; then
  STUDY="--device=cpu --quick --ways=sequential,packed"
  SINGLE="--device=cpu --sizes=xxs --steps=2 --warm=1 --repeats=1"
  STUDY_S=${STUDY_S:-1500} SINGLE_S=${SINGLE_S:-600}
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/env.txt"
  STUDY="--device=cuda"
  SINGLE="--device=cuda --long --sizes=xs,s,m --extra=vit-s16-224"
  STUDY_S=${STUDY_S:-250} SINGLE_S=${SINGLE_S:-180}
fi
start=$(date +%s)
timeout "$STUDY_S" python benchmarks/study_throughput.py $STUDY --out /tmp/study-throughput 2>&1 \
  | grep -v -i warn | tee "$OUT/study_throughput.txt"
cp /tmp/study-throughput/summary.json "$OUT/study_throughput.json" 2>/dev/null
tar czf "$OUT/study_throughput_logs.tgz" --exclude=checkpoints --exclude="*.ckpt" --exclude="*.pt" -C /tmp/study-throughput . 2>/dev/null
echo "study throughput: $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
if [ "${CPU:-0}" != 1 ]; then  # the strong recipe's cost (issue "Credible answers"), calibration rungs
  timeout "${COST_S:-120}" python benchmarks/augment_cost.py --device=cuda --rungs=resnet:m,vit:s,resnet:s,vit:m \
    --steps=230 --warm=30 2>&1 | grep -v -i warn | tee "$OUT/augment_cost.txt"
  echo "augment cost: $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
fi
timeout "$SINGLE_S" python benchmarks/throughput.py $SINGLE 2>&1 | grep -v -i warn | tee "$OUT/throughput_long.txt"
echo "total: $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
[ "${CPU:-0}" = 1 ] || nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$OUT/env.txt"
