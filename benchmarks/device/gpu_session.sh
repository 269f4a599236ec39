#!/usr/bin/env bash
# One prepared call on a lent GPU machine, from the checkout root; everything it finds goes to $OUT.
#   carry: .device (cifar10.pack from pack.py, cells.txt from cells.py)
# 1. CIFAR-10 unpacked and decoded once into the cache; 2. throughput, project vs plain loop;
# 3. part of sweeps/cifar10.yaml, all cells at once on the one GPU, cut off at STUDY_S seconds.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 BENCH_CACHE=/tmp/bench-cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/res/runs /tmp/res/logs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python -c "import torch, timm, pytorch_lightning as pl; print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', pl.__version__)" | tee -a "$OUT/gpu.txt"
python benchmarks/device/pack.py unpack .device/cifar10.pack /tmp/cifar10-jpeg
python -c "
from bench.cell.config import Cell; from bench.cell.datasets import load_splits
s = load_splits(Cell(dataset='imagefolder', data_dir='/tmp/cifar10-jpeg')); print('cached', tuple(s.train_x.shape))"
timeout "${BENCH_S:-120}" python benchmarks/throughput.py --device=cuda 2>&1 | grep -v -i warn | tee "$OUT/throughput.txt"
start=$(date +%s)
timeout "${STUDY_S:-200}" xargs -P "${PARALLEL:-16}" -I{} sh -c '{}' < .device/cells.txt
echo "study part: $(ls /tmp/res/runs/*.json 2>/dev/null | wc -l) records in $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu.txt"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$OUT/gpu.txt"
tar czf "$OUT/cifar10-gpu.tgz" -C /tmp/res runs logs
