"""LightningModule training a MemPoser on track scenes with the gauge-invariant pair loss."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

from memposer.models.checkpoint import checkpoint_meta
from memposer.models.losses import default_loss_conf, pose_loss
from memposer.models.mempose import MemPoser
from memposer.training.metrics import identity_predictor, relative_errors_deg, summarize

default_optim_conf = {
    "lr": 5e-4,
    "weight_decay": 0.05,
    "warmup_steps": 200,
    "min_lr_ratio": 0.05,       # cosine decays to lr * min_lr_ratio at the last step
}


def _gather_cat(x: np.ndarray) -> np.ndarray:
    """Concatenate an array over DDP ranks (variable lengths)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, x)
    return np.concatenate(parts)


class MemPoserModule(pl.LightningModule):
    def __init__(self, model: Optional[Dict[str, Any]] = None, loss: Optional[Dict[str, Any]] = None,
                 optim: Optional[Dict[str, Any]] = None):
        super().__init__()
        self.save_hyperparameters()
        self.model = MemPoser(model)
        unknown = set(loss or {}) - set(default_loss_conf)
        unknown_o = set(optim or {}) - set(default_optim_conf)
        if unknown or unknown_o:
            raise KeyError(f"unknown loss/optim option(s) {sorted(unknown | unknown_o)}; known: "
                           f"loss {sorted(default_loss_conf)}, optim {sorted(default_optim_conf)}")
        self.loss_conf = {**default_loss_conf, **(loss or {})}
        self.optim_conf = {**default_optim_conf, **(optim or {})}
        self._val: Dict[str, list] = {}

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        init = (batch["init_R"], batch["init_center"]) if "init_R" in batch else None
        return self.model(batch["obs"], batch["vis"], batch["mask"], init=init, exif=batch.get("exif"))

    def on_train_epoch_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and getattr(dm, "_train", None) is not None:
            dm._train.epoch = self.current_epoch  # new scenes every epoch (workers copy it at start)

    def training_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        terms = pose_loss(self(batch), batch["R"], batch["t"], batch["mask"], self.loss_conf)
        bs = len(batch["mask"])
        for k, v in terms.items():
            self.log(f"train/{k}", v.detach(), prog_bar=k == "loss", batch_size=bs, sync_dist=False)
        return terms["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = {"rot": [], "tdir": [], "rot_id": [], "tdir_id": [], "loss": []}

    def validation_step(self, batch: Dict[str, torch.Tensor], batch_idx: int) -> None:
        out = self(batch)
        self._val["loss"].append(float(pose_loss(out, batch["R"], batch["t"], batch["mask"], self.loss_conf)["loss"]))
        err = relative_errors_deg(out["R"], out["t"], batch["R"], batch["t"], batch["mask"])
        ident = identity_predictor(batch["R"])
        err_id = relative_errors_deg(ident["R"], ident["t"], batch["R"], batch["t"], batch["mask"])
        for k in ("rot", "tdir"):
            self._val[k].append(err[k])
            self._val[k + "_id"].append(err_id[k])

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("rot"):
            return
        cat = {k: _gather_cat(np.concatenate(self._val[k])) for k in ("rot", "tdir", "rot_id", "tdir_id")}
        metrics = summarize(cat["rot"], cat["tdir"], "val")
        metrics.update(summarize(cat["rot_id"], cat["tdir_id"], "val_identity"))
        metrics["val/loss"] = float(np.mean(_gather_cat(np.array(self._val["loss"]))))
        # every rank holds the same gathered numbers: no further reduction needed
        for k, v in metrics.items():
            self.log(k, v, prog_bar=k in ("val/rot_err_median", "val/tdir_err_median"), sync_dist=False,
                     rank_zero_only=False)

    def configure_optimizers(self):
        c = self.optim_conf
        decay = [p for n, p in self.model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": c["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=c["lr"])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = min(c["warmup_steps"], max(1, total // 10))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            p = min(1.0, (step - warm) / max(1, total - warm))
            return c["min_lr_ratio"] + (1 - c["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * p))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["memposer"] = checkpoint_meta(self.model)
