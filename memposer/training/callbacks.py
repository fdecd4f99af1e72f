"""Training callbacks: frames/s throughput, and a parameter checksum to check DDP replicas agree."""
from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class Throughput(pl.Callback):
    """Logs training frames/s (real frames, padding excluded), timed from batch start to batch end."""

    def __init__(self, warmup_batches: int = 5):
        self.warmup = warmup_batches
        self.reset()

    def reset(self) -> None:
        self.frames, self.seconds, self.seen = 0, 0.0, 0
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.seen += 1
        if self.seen <= self.warmup or self._t0 is None:
            return
        self.seconds += time.perf_counter() - self._t0
        # frames on this rank times the world size: global throughput
        self.frames += int(batch["mask"].sum()) * trainer.world_size
        if self.seconds > 0:
            pl_module.log("perf/train_frames_per_s", self.frames / self.seconds, rank_zero_only=True,
                          batch_size=len(batch["scene"]))

    def on_train_end(self, trainer, pl_module):
        if self.seconds > 0 and trainer.is_global_zero:
            log.info("training throughput: %.1f frames/s over %d timed steps (world size %d)",
                     self.frames / self.seconds, self.seen - self.warmup, trainer.world_size)


class ParamChecksum(pl.Callback):
    """Prints each rank's parameter checksum at the end of training (DDP replicas must agree)."""

    def on_train_end(self, trainer, pl_module):
        with torch.no_grad():
            s = sum(float(p.double().sum()) for p in pl_module.parameters() if p.requires_grad)
        print(f"PARAM_CHECKSUM rank={trainer.global_rank} world_size={trainer.world_size} "
              f"steps={trainer.global_step} value={s:.10e}", flush=True)
