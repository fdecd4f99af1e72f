"""Training callbacks: the resumable last checkpoint, frames/s throughput, and a parameter checksum
to check DDP replicas agree."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Dict, Optional

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class SaveLast(pl.Callback):
    """``last.ckpt`` after every validation and when training ends (``max_steps`` or ``max_time``).

    Lightning (2.6) writes ``last.ckpt`` only when a top-k checkpoint is written, i.e. when the
    monitored metric improved: a run whose final validation was not its best, or that stopped on
    ``max_time`` between validations, left an older step behind to resume from."""

    def __init__(self, dirpath: str | Path):
        self.path = Path(dirpath) / "last.ckpt"

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        trainer.save_checkpoint(str(self.path))  # every rank calls it; rank 0 writes

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)


class Throughput(pl.Callback):
    """Training frames/s (real frames, padding excluded) after ``warmup_batches``.

    Two numbers: ``step`` times batch start to batch end (compute only, the GPU synchronised);
    ``wall`` also counts the wait for the next batch (data loading), validation excluded.
    At the end the frame counts of all ranks are summed, and ``summary`` (and ``<path>`` if given,
    JSON, rank 0) holds the global numbers.
    """

    def __init__(self, warmup_batches: int = 20, path: Optional[str] = None):
        self.warmup = warmup_batches
        self.path = path
        self.summary: Dict[str, float] = {}
        self.frames, self.step_s, self.wall_s, self.seen = 0, 0.0, 0.0, 0
        self._t0: Optional[float] = None
        self._last_end: Optional[float] = None

    @staticmethod
    def _sync(pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(pl_module)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(pl_module)
        now = time.perf_counter()
        self.seen += 1
        last, self._last_end = self._last_end, now
        if self.seen <= self.warmup or self._t0 is None:
            return
        self.step_s += now - self._t0
        self.wall_s += now - (last if last is not None else self._t0)
        self.frames += int(batch["mask"].sum())
        # logged per rank times the world size: an estimate; on_train_end sums the real counts
        pl_module.log("perf/train_frames_per_s", self.frames * trainer.world_size / self.wall_s,
                      rank_zero_only=True, batch_size=len(batch["mask"]))

    def on_validation_start(self, trainer, pl_module):
        self._last_end = None  # the time spent validating is no data-loading wait

    def on_train_end(self, trainer, pl_module):
        stats = torch.tensor([self.frames, self.step_s, self.wall_s, max(0, self.seen - self.warmup)],
                             dtype=torch.float64, device=pl_module.device)
        frames = float(trainer.strategy.reduce(stats[:1].clone(), reduce_op="sum")[0])
        times = trainer.strategy.all_gather(stats[1:3].clone()).reshape(-1, 2)
        step_s, wall_s = (float(x) for x in times.max(0).values)  # the slowest rank sets the pace
        if wall_s <= 0:
            return
        self.summary = {"world_size": trainer.world_size, "timed_steps": float(stats[3]), "frames": frames,
                        "step_seconds": step_s, "wall_seconds": wall_s,
                        "frames_per_s_step": frames / step_s, "frames_per_s_wall": frames / wall_s}
        if trainer.is_global_zero:
            log.info("training throughput: %.1f frames/s (%.1f compute-only) over %d steps, world size %d",
                     frames / wall_s, frames / step_s, stats[3], trainer.world_size)
            if self.path:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                Path(self.path).write_text(json.dumps(self.summary, indent=2))


class ParamChecksum(pl.Callback):
    """Prints each rank's parameter checksum at the end of training (DDP replicas must agree)."""

    def on_train_end(self, trainer, pl_module):
        with torch.no_grad():
            s = sum(float(p.double().sum()) for p in pl_module.parameters() if p.requires_grad)
        print(f"PARAM_CHECKSUM rank={trainer.global_rank} world_size={trainer.world_size} "
              f"steps={trainer.global_step} value={s:.10e}", flush=True)
