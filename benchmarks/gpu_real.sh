#!/usr/bin/env bash
# The real labelled sets (../shared/data) through the pipeline on the lent GPU machine (device tool),
# each dataset in its own benchmark invocation, every variant on the same cached matches:
#   DATASETS=liberty,middlebury bash benchmarks/gpu_real.sh best,intrinsics-off [pipeline args...]
#   DATASETS=beer EVERY=3 bash benchmarks/gpu_real.sh best
# Carry .gpuwheels/ (benchmarks/gpu_pipeline.sh says how it is built) and .realdata/, a copy of the
# sets named (imc_real/ and/or beer/ as laid out in ../shared/data). The 64 MiB carry holds
# .gpuwheels + imc_real, or .gpuwheels + beer, not all three, and not with the tracked checkpoints.
# Results (tables, results.json, each variant's log) are copied to $OUT after every dataset.
set -uo pipefail
variants=${1:-best}
shift || true
source benchmarks/gpu_env.sh
start=$(date +%s)
for d in ${DATASETS//,/ }; do
  bench=/tmp/real-$d
  copy_logs() { for f in "$bench"/*/stderr.log; do [ -f "$f" ] && cp "$f" "$OUT/$d-$(basename "$(dirname "$f")").stderr.log"; done; }
  (while sleep 15; do copy_logs; done) >/dev/null 2>&1 &
  copier=$!
  if [ "$d" = beer ]; then
    python3 benchmarks/beer.py --beer .realdata/beer --out "$bench" --every "${EVERY:-3}" --variants "$variants" "$@" 2>&1
  else
    python3 benchmarks/real.py --data .realdata/imc_real --datasets "$d" --out "$bench" --variants "$variants" "$@" 2>&1
  fi | grep -v "^[IW]20[0-9][0-9]" | tee "$OUT/$d.log"
  kill $copier 2>/dev/null
  copy_logs
  cp "$bench/results.json" "$OUT/$d-results.json"
  echo "$d done at $(( $(date +%s) - start )) s" | tee -a "$OUT/$d.log"
done
