#!/usr/bin/env bash
# MemPoser training on GPUs, one device call (docs/results.md, "MemPoser: the track model").
#   RUNS="main"            names of runs; each run NAME reads the overrides in $ARGS_<NAME>
#   MAXTIME=00:00:08:30    wall-clock limit per run (all runs go in parallel on the machine's GPUs)
#   RESUME=path            Lightning checkpoint to resume the run "main" from (parts joined first; a
#                          path.xz is unpacked first: xz -T2 -6 makes a 50 MB checkpoint fit the 64 MiB carry)
# Usage (repo root): RUNS="main" ARGS_main="trainer.max_steps=40000" OUT=/some/dir bash benchmarks/gpu_train.sh
# Returns, under $OUT: <run>.safetensors, <run>_metrics.csv, <run>.log, <run>_last.ckpt.part-* (15 MiB parts).
# CPU dry run: CPU=1 MAXTIME=00:00:00:40 bash benchmarks/gpu_train.sh
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
OUT=${OUT:-outputs/gpu_run}
RUNS=${RUNS:-main}
MAXTIME=${MAXTIME:-00:00:08:30}
CONFIG=${CONFIG:-configs/train_gpu.yaml}
mkdir -p "$OUT"
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
stamp() { echo "=== $(date -u +%H:%M:%S) $*"; }
if [[ -n "${CPU:-}" ]]; then
  HW="model=tiny trainer.accelerator=cpu trainer.precision=32-true data.num_workers=1 data.batch_size=4 data.val_batches=1 trainer.val_check_interval=5"
else
  HW=""
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc
  python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__, 'gpus', torch.cuda.device_count())"
fi
if [[ -n "${RESUME:-}" && ! -f "$RESUME" ]] && ls "$RESUME".part-* >/dev/null 2>&1; then
  cat "$RESUME".part-* > "$RESUME"
fi
if [[ "${RESUME:-}" == *.xz ]]; then  # python's lzma: the GPU image need not have xz
  python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[1][:-3], 'wb'))" "$RESUME"
  RESUME=${RESUME%.xz}
fi
for name in $RUNS; do
  var="ARGS_$name"; extra=${!var:-}
  res=""; [[ $name == main && -n "${RESUME:-}" ]] && res="resume=$RESUME"
  stamp "train $name: $extra $res"
  rm -rf "outputs/$name"
  OMP_NUM_THREADS=2 python3 train.py --config "$CONFIG" output_dir="outputs/$name" logger=csv \
    export="$OUT/$name.safetensors" trainer.max_time=$MAXTIME $HW $extra $res > "$OUT/$name.log" 2>&1 &
done
wait
for name in $RUNS; do
  stamp "$name: $(grep -E 'exported|Error' "$OUT/$name.log" | tail -2)"
  cp outputs/$name/csv/version_*/metrics.csv "$OUT/${name}_metrics.csv" 2>/dev/null
  last=outputs/$name/checkpoints/last.ckpt
  [[ -f $last ]] && split -b 15M -d "$last" "$OUT/${name}_last.ckpt.part-"
  python3 - "$OUT/${name}_metrics.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r.get("val/rot_err_median")]
for r in rows:
    print(f"step {r['step']:>6}: val rot {float(r['val/rot_err_median']):6.2f} tdir {float(r['val/tdir_err_median']):6.2f}"
          f"  identity rot {float(r['val_identity/rot_err_median']):6.2f}")
PY
done
ls -la "$OUT"
stamp done
