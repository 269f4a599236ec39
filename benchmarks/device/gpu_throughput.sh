#!/usr/bin/env bash
# Prepared calls on a GPU machine (H100/H200), from the checkout root; output under $OUT. Needs no
# download, no W&B and no sweep engine (synthetic data, W&B off). Name the parts to run:
#   bash benchmarks/device/gpu_throughput.sh study          # ~5.5 min: study throughput, four ways
#                                                           # (sequential, 16 processes, 4 workers,
#                                                           # 4 workers packed 6 cells a rung)
#   bash benchmarks/device/gpu_throughput.sh single batch cost dispatch  # ~5.5 min: Lightning vs
#                                                           # plain loop, 300 timed steps x 3
#                                                           # (ResNet m, ViT-S/16 at 224 px), then
#                                                           # batch 512 on the calibration rungs,
#                                                           # the strong recipe's cost at batch
#                                                           # 512, and its augmentation's host
#                                                           # time, batches shared per policy call
#                                                           # or not
#   bash benchmarks/device/gpu_throughput.sh compile        # ~4 min: both loops compiled with CUDA
#                                                           # graphs (reduce-overhead) against the
#                                                           # project eager, ViT and ResNet s (the
#                                                           # calibration's rungs) at batch 512
#   bash benchmarks/device/gpu_throughput.sh study-compiled # ~3 min: the study's cells in 4 workers,
#                                                           # eager and compiled (CUDA graphs)
#   CPU=1 bash benchmarks/device/gpu_throughput.sh study single   # the same steps, tiny, on a CPU
# One call runs at most 10 minutes: `study` needs one of them (its four ways took 300 s on an
# H200), the other parts the next. Each part stops at its limit (STUDY_S, SINGLE_S, BATCH_S,
# COST_S, DISPATCH_S, COMPILE_S, STUDY_COMPILED_S seconds); a way or rung cut off says so and is not a measurement.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 BENCH_CACHE=${BENCH_CACHE:-/tmp/bench-cache}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
PARTS=${*:-study}
python -c "import torch, timm, pytorch_lightning as pl; print('torch', torch.__version__, 'timm', timm.__version__, 'lightning', pl.__version__)" | tee -a "$OUT/env.txt"
if [ "${CPU:-0}" = 1 ]; then
  DEV=cpu STUDY="--quick --ways=sequential,packed" SINGLE="--sizes=xxs --steps=2 --warm=1 --repeats=1"
  BATCH="--sizes=xxs --steps=2 --warm=1 --repeats=1" COST="--rungs=resnet:xxs --steps=4 --warm=1"
  DISPATCH="--batches=128 --epoch_chunks=1 --warm=1 --repeats=1"
  COMPILE="--sizes=xxs --families=vit --steps=2 --warm=2 --repeats=1 --compile_mode=default"
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/env.txt"
  DEV=cuda STUDY="" SINGLE="--long --families=resnet --sizes=m --extra=vit-s16-224"
  # the calibration sweeps' batch: a small model's step costs about the same at 128 and 256
  # (host-bound), so the images/s at 512 decide how long calibration takes
  BATCH="--batch=512 --sizes=s,m --steps=100 --warm=20 --repeats=2"
  COST="--batch=512 --rungs=resnet:m,vit:s,resnet:s,vit:m --steps=130 --warm=30"
  DISPATCH="--img=32 --repeats=9"
  # the warm-up steps hold the compilation and the graphs' recording; the second repeat loads
  # the compiled kernels from the inductor cache
  # (about 100 s a rung: a first compilation of ~40 s, then cache hits, and 6 timed runs)
  COMPILE="--batch=512 --sizes=s --steps=150 --warm=30 --repeats=2 --compile_mode=reduce-overhead"
fi
start=$(date +%s) failed=""
part() {  # name, seconds, command...: run it under a limit, its output to $OUT/name.txt
  local name=$1 limit=$2; shift 2
  timeout -s TERM "$limit" "$@" 2>&1 | grep -v -i warn | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "$name: STOPPED at its ${limit} s limit" | tee -a "$OUT/$name.txt"
  [ "$rc" = 0 ] || failed="$failed $name"
  echo "$name: done at $(( $(date +%s) - start )) s" | tee -a "$OUT/env.txt"
}
for p in $PARTS; do
  case $p in
    study)
      part study_throughput "${STUDY_S:-330}" python benchmarks/study_throughput.py --device=$DEV $STUDY --out /tmp/study-throughput
      cp /tmp/study-throughput/summary.json "$OUT/study_throughput.json" 2>/dev/null
      tar czf "$OUT/study_throughput_logs.tgz" --exclude=checkpoints --exclude="*.ckpt" \
        -C /tmp/study-throughput . 2>/dev/null ;;
    study-compiled)
      part study_compiled "${STUDY_COMPILED_S:-280}" python benchmarks/study_throughput.py --device=$DEV $STUDY --ways=worker,compiled --out /tmp/study-compiled
      cp /tmp/study-compiled/summary.json "$OUT/study_compiled.json" 2>/dev/null ;;
    single) part throughput_long "${SINGLE_S:-140}" python benchmarks/throughput.py --device=$DEV $SINGLE ;;
    batch) part throughput_batch512 "${BATCH_S:-60}" python benchmarks/throughput.py --device=$DEV $BATCH ;;
    cost) part augment_cost "${COST_S:-90}" python benchmarks/augment_cost.py --device=$DEV $COST ;;
    dispatch) part augment_dispatch "${DISPATCH_S:-40}" python benchmarks/augment_dispatch.py --device=$DEV $DISPATCH ;;
    compile) part throughput_compiled "${COMPILE_S:-280}" python benchmarks/throughput.py --device=$DEV $COMPILE ;;
    *) echo "unknown part $p (study, study-compiled, single, batch, cost, dispatch, compile)" >&2; exit 2 ;;
  esac
done
[ "${CPU:-0}" = 1 ] || nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader >> "$OUT/env.txt"
[ -z "$failed" ] || { echo "parts that failed or were stopped:$failed" | tee -a "$OUT/env.txt"; exit 1; }
