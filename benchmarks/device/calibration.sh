#!/usr/bin/env bash
# One prepared call on a lent GPU machine (one H100/H200), from the checkout root; each PART
# finishes inside ~8 minutes and can be called again: completed cells are skipped, and while the
# machine is still warm an interrupted cell resumes from its last checkpoint.
#   here:   bash benchmarks/device/prepare.sh            (fills .device/ and .whl/)
#   there:  bash benchmarks/device/calibration.sh PART   carry: .device .whl
# PART: cost         benchmarks/augment_cost.py on the GPU (strong vs basic images/s, ~2 min)
#       SWEEP.yaml   any grid on data/cifar10-jpeg, e.g. sweeps/cifar10.yaml, 8 cells at once
#       calibration  sweeps/cifar10-calibration.yaml, 4 cells at once (about 2 chunks)
#       lr-wd        sweeps/cifar10-lr-wd.yaml, 6 cells at once (about 1-2 chunks)
# Everything it produces goes to $OUT: the part's records and logs, gpu.txt, cost.txt.
# Environment: CHUNK_S (seconds before the grid is stopped, default 450), PER_DEVICE, GRID_ARGS
# (more `bench grid` options, e.g. GRID_ARGS='--set compile_mode=reduce-overhead': a runtime
# field, so the cells and their run_ids stay the same).
set -u
PART=${1:?usage: calibration.sh cost|calibration|lr-wd}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 BENCH_CACHE=${BENCH_CACHE:-/tmp/bench-cache} WANDB_MODE=disabled
export BENCH_GIT_COMMIT=${BENCH_GIT_COMMIT:-$(cat .device/git_commit 2>/dev/null || git rev-parse HEAD 2>/dev/null)}
if ls .whl/*.whl >/dev/null 2>&1; then  # wandb's sweep engine, for `bench grid`
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD
fi
mkdir -p /tmp/bin  # the sweeps' command is `bench run ...`; the checkout is not pip-installed here
printf '#!/bin/sh\nexec python3 -m bench.cli "$@"\n' > /tmp/bin/bench && chmod +x /tmp/bin/bench
export PATH=/tmp/bin:$PATH
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/gpu.txt"
echo "commit ${BENCH_GIT_COMMIT:-unknown}, part $PART" | tee -a "$OUT/gpu.txt"

if [ "$PART" = cost ]; then
  timeout 300 python3 benchmarks/augment_cost.py --device cuda 2>&1 | grep -v -i warn | tee "$OUT/cost.txt"
  exit 0
fi
case $PART in
  calibration) SWEEP=sweeps/cifar10-calibration.yaml; K=${PER_DEVICE:-4} ;;
  lr-wd) SWEEP=sweeps/cifar10-lr-wd.yaml; K=${PER_DEVICE:-6} ;;
  *.yaml) SWEEP=$PART; K=${PER_DEVICE:-8} ;;  # any grid reading data/cifar10-jpeg, e.g. sweeps/cifar10.yaml
  *) echo "unknown part $PART" >&2; exit 2 ;;
esac
# the study the sweep writes to (a study parameter wins over the sweep's name)
STUDY=$(python3 -c "import sys; from bench.study.sweep_config import load_sweep; print(load_sweep(sys.argv[1]).study)" "$SWEEP") || exit 2
if [ ! -d data/cifar10-jpeg/train ]; then  # CIFAR-10 unpacked, then decoded once into the cache
  python3 benchmarks/device/pack.py unpack .device/cifar10.pack data/cifar10-jpeg || exit 1
fi
python3 -c "
from bench.cell.config import Cell; from bench.cell.datasets import load_splits
s = load_splits(Cell(dataset='imagefolder', data_dir='data/cifar10-jpeg')); print('cached', tuple(s.train_x.shape))"
start=$(date +%s)
# SIGTERM at CHUNK_S: the runner stops its cells (grace 20 s); a rerun skips done cells, resumes the rest
# shellcheck disable=SC2086  # GRID_ARGS is split into options on purpose
timeout -s TERM "${CHUNK_S:-450}" bench grid "$SWEEP" --devices 0 --per_device "$K" --grace 20 ${GRID_ARGS:-}
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$OUT/gpu.txt"
done_n=$(grep -l '"status": "completed"' results/$STUDY/runs/*.json 2>/dev/null | wc -l)
echo "$STUDY: $done_n cells completed, chunk took $(( $(date +%s) - start )) s" | tee -a "$OUT/gpu.txt"
mkdir -p "$OUT/$STUDY"
cp -r results/$STUDY/runs results/$STUDY/logs results/$STUDY/sweeps "$OUT/$STUDY/" 2>/dev/null
rm -rf "$OUT/$STUDY/runs/.locks"
