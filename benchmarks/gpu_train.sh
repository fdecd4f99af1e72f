#!/usr/bin/env bash
# MemPoser GPU runs of docs/results.md (issues #4, #8), one device call:
#   data   synthetic training scenes, NGEN generator processes in parallel (one folder each)
#   test   the GPU-only tests (real xformers vs SDPA)
#   bench  inference frames/s, ViT-S preset, SDPA vs xformers, bf16 vs fp32
#   ddp2   train configs/train_synth.yaml on 2 GPUs (Lightning DDP, NCCL)
#   gpu1   the same config on 1 GPU
# Usage (repo root): STAGES="data test bench ddp2 gpu1" OUT=/some/dir bash benchmarks/gpu_train.sh
# CPU dry run: CPU=1 NGEN=2 DPG=1 STAGES="data ddp2 gpu1" bash benchmarks/gpu_train.sh
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
OUT=${OUT:-outputs/gpu_run}  # checkpoints + results.tgz only (the device returns at most 8 files)
WORK=${WORK:-outputs/gpu_work}
STAGES=${STAGES:-"data test bench ddp2 gpu1"}
NGEN=${NGEN:-28}            # generator processes
DPG=${DPG:-5}               # datasets per generator
DATA=${DATA:-data/synth_gpu}
MAXTIME_DDP=${MAXTIME_DDP:-00:00:03:20}
MAXTIME_1=${MAXTIME_1:-00:00:02:40}
EXTRA=${EXTRA:-}            # more train.py overrides for both runs
mkdir -p "$OUT" "$DATA" "$WORK"
pack() { tar czf "$OUT/results.tgz" -C "$WORK" . 2>/dev/null; }
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
stamp() { echo "=== $(date -u +%H:%M:%S) $*"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }

if [[ -n "${CPU:-}" ]]; then
  TRAIN_HW="model=tiny trainer.accelerator=cpu trainer.precision=32-true data.num_workers=0 data.samples_per_epoch=8 trainer.max_epochs=2 data.batch_size=2 data.preload_threads=2"
  DDP_HW="trainer.devices=2 trainer.strategy=ddp"
else
  TRAIN_HW=""
  DDP_HW="trainer.devices=2 trainer.strategy=ddp"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nvidia-smi topo -m 2>/dev/null | head -4; nproc
  python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__, 'gpus', torch.cuda.device_count())"
fi

if has data; then
  stamp "data: $NGEN generators x $DPG datasets"
  for i in $(seq 0 $((NGEN - 1))); do
    [[ -f $DATA/g$i/train_labels.csv ]] && continue
    OMP_NUM_THREADS=1 python3 -m memposer.data.synthetic --out "$DATA/g$i" --preset train --datasets "$DPG" \
      --seed $((1000 + i)) --split train --long-side 192 --quiet > "$DATA/gen$i.log" 2>&1 &
  done
  wait
  ok=$(ls $DATA/g*/train_labels.csv 2>/dev/null | wc -l)
  stamp "data: $ok folders, $(cat $DATA/g*/train_labels.csv | grep -vc '^image_id') label rows"
  cp $DATA/gen0.log "$WORK/" 2>/dev/null
  [[ $ok -gt 0 ]] || { tail -20 $DATA/gen0.log; exit 1; }
fi
ROOTS=$(ls -d $DATA/g*/ 2>/dev/null | sed 's:/$::' | paste -sd, -)

if has test; then
  stamp "test"
  python3 -m pytest -q -p no:cacheprovider --noconftest tests/models/test_attention.py 2>&1 | tail -5
fi

if has bench; then
  stamp "bench: inference"
  python3 benchmarks/model.py --model ${BENCH_MODEL:-vits} --frames ${BENCH_FRAMES:-64 256} --amp bf16 fp32 --out "$WORK/bench_infer.json" 2>&1 \
    | grep -v "^{" | tail -30
  pack
fi

train() {  # name, extra overrides...
  local name=$1; shift
  stamp "train $name"
  rm -rf "outputs/$name"
  OMP_NUM_THREADS=${TRAIN_THREADS:-4} python3 train.py --config configs/train_synth.yaml "data.root=[$ROOTS]" output_dir="outputs/$name" \
    export="$OUT/memposer_synth_$name.ckpt" $TRAIN_HW $EXTRA "$@" > "$WORK/train_$name.log" 2>&1
  echo "rc=$?"
  grep -E "throughput|exported|Error|error|scenes:" "$WORK/train_$name.log" | tail -8
  cp outputs/$name/csv/version_*/metrics.csv "$WORK/metrics_$name.csv" 2>/dev/null
  cp outputs/$name/throughput.json "$WORK/throughput_$name.json" 2>/dev/null
  cp outputs/$name/metrics.json "$WORK/final_$name.json" 2>/dev/null
  pack
}
has ddp2 && train ${NAME_DDP:-ddp2} $DDP_HW trainer.max_time=$MAXTIME_DDP
has gpu1 && train ${NAME_1:-gpu1} trainer.max_time=$MAXTIME_1

pack
ls -la "$OUT"
stamp done
