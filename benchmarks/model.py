"""Inference throughput of MemPoser: frames/s of ``predict`` on one cluster, per attention backend.

``python benchmarks/model.py --checkpoint checkpoints/memposer-tracks.safetensors --frames 64 256 --tracks 1024``

Times ``MemPoser.predict`` (encoder + memory + decoder + head, a synthetic cluster's tracks already
on the device) after warm-up, synchronising the GPU, and reports the median of ``--reps`` runs.
The poses of every backend are compared with the first backend's on the same input.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

from memposer.models import attention
from memposer.models.checkpoint import load_checkpoint
from memposer.models.mempose import MemPoser
from memposer.training.config import resolve_model

log = logging.getLogger("benchmarks.model")


def predict(model: MemPoser, obs: torch.Tensor, vis: torch.Tensor, amp: bool) -> Dict[str, torch.Tensor]:
    with torch.autocast(obs.device.type, dtype=torch.bfloat16, enabled=amp):
        return model.predict(obs, vis)


def time_predict(model: MemPoser, obs: torch.Tensor, vis: torch.Tensor, amp: bool, reps: int,
                 warmup: int = 2) -> Dict[str, float]:
    for _ in range(warmup):
        predict(model, obs, vis, amp)
    sync = torch.cuda.synchronize if obs.is_cuda else (lambda: None)
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        predict(model, obs, vis, amp)
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"seconds": med, "frames_per_s": len(obs) / med}


def cluster(n: int, tracks: int, seed: int = 0):
    """A synthetic cluster of ``n`` cameras and ``tracks`` tracks (every track seen by ~8 cameras)."""
    g = torch.Generator().manual_seed(seed)
    vis = torch.rand(n, tracks, generator=g) < min(1.0, 8 / n)
    vis[0] |= ~vis.any(0)
    return torch.randn(n, tracks, 2, generator=g) * 0.3, vis


def run(args) -> List[Dict]:
    device = torch.device(args.device)
    if args.checkpoint:
        model = load_checkpoint(args.checkpoint, map_location=device)
        name = Path(args.checkpoint).name
    else:
        torch.manual_seed(0)
        model = MemPoser(resolve_model(args.model)).to(device).eval()
        name = args.model
    rows, ref = [], {}
    for n in args.frames:
        obs, vis = (x.to(device) for x in cluster(n, args.tracks))
        for amp_name in args.amp:
            amp = amp_name == "bf16"
            for backend in args.backends:
                attention.set_backend(backend)
                try:
                    if backend == "xformers" and attention.backend_for(obs) != "xformers":
                        raise RuntimeError("xformers not active")
                    res = time_predict(model, obs, vis, amp, args.reps)
                    out = predict(model, obs, vis, amp)
                except Exception as e:  # a missing / broken xformers: report it, keep going
                    rows.append({"model": name, "frames": n, "amp": amp_name, "backend": backend,
                                 "error": f"{type(e).__name__}: {e}"[:300]})
                    log.warning("%s %s n=%d: %s", backend, amp_name, n, rows[-1]["error"])
                    continue
                key = (n, amp_name)
                ref.setdefault(key, out)
                diff = {k: float((out[k] - ref[key][k]).abs().max()) for k in ("R", "t")}
                mem = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else 0.0
                rows.append({"model": name, "frames": n, "tracks": args.tracks, "amp": amp_name, "backend": backend,
                             **res,
                             "max_abs_diff_vs_first_R": diff["R"], "max_abs_diff_vs_first_t": diff["t"],
                             "peak_gib": mem})
                log.info("%s", json.dumps(rows[-1]))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="model preset (configs/model/) when no --checkpoint")
    p.add_argument("--checkpoint", help="a MemPoser checkpoint instead of a random-weight preset")
    p.add_argument("--frames", type=int, nargs="+", default=[64, 256], help="cluster sizes")
    p.add_argument("--amp", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    p.add_argument("--backends", nargs="+", default=["sdpa", "xformers"], choices=["sdpa", "xformers"])
    p.add_argument("--tracks", type=int, default=1024, help="tracks of the cluster (the model's P)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rows = run(args)
    info = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "torch": torch.__version__, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(info, indent=2))
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
