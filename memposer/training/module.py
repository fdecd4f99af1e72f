"""LightningModule training a MemPoser with the gauge-invariant pair loss."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist

from memposer.models.checkpoint import checkpoint_meta, trained_state_dict
from memposer.models.losses import default_loss_conf, pose_loss
from memposer.models.mempose import MemPoser
from memposer.training.metrics import identity_predictor, relative_errors_deg, samples_maa, summarize

default_optim_conf = {
    "lr": 3e-4,
    "backbone_lr_scale": 1.0,   # backbone lr = lr * scale (pretrained weights: ~0.1)
    "weight_decay": 0.05,
    "warmup_steps": 100,
    "min_lr_ratio": 0.05,       # cosine decays to lr * min_lr_ratio at the last step
}


def _gather_cat(x: np.ndarray) -> np.ndarray:
    """Concatenate an array over DDP ranks (variable lengths)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, x)
    return np.concatenate(parts)


def _gather_list(x: list) -> list:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, x)
    return [s for p in parts for s in p]


class MemPoserModule(pl.LightningModule):
    def __init__(self, model: Optional[Dict[str, Any]] = None, loss: Optional[Dict[str, Any]] = None,
                 optim: Optional[Dict[str, Any]] = None, thresholds: Optional[Dict] = None):
        super().__init__()
        self.save_hyperparameters(ignore=["thresholds"])
        self.model = MemPoser(model)
        self.loss_conf = {**default_loss_conf, **(loss or {})}
        self.optim_conf = {**default_optim_conf, **(optim or {})}
        self.thresholds = thresholds or {}
        self.strict_loading = False  # checkpoints leave the frozen backbone out
        self._val: Dict[str, list] = {}
        self._maa_identity: Optional[tuple] = None  # (val sample scenes, identity mAA)

    def forward(self, images, mask=None):
        return self.model(images, mask)

    @staticmethod
    def _check(batch: Dict[str, Any]) -> None:
        if not batch["images"].is_floating_point():  # uint8 must be converted by the datamodule's hook
            raise TypeError(f"batch images must be floats in [0,1], got {batch['images'].dtype}")

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        self._check(batch)
        out = self.model(batch["images"], batch["mask"])
        terms = pose_loss(out, batch["R"], batch["t"], batch["mask"], self.loss_conf, batch["is_sequence"])
        bs = len(batch["scene"])
        for k, v in terms.items():
            self.log(f"train/{k}", v.detach(), prog_bar=k == "loss", batch_size=bs, sync_dist=False)
        return terms["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = {"rot": [], "tdir": [], "rot_id": [], "tdir_id": [], "samples": [], "loss": []}

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self._check(batch)
        out = self.model(batch["images"], batch["mask"])
        terms = pose_loss(out, batch["R"], batch["t"], batch["mask"], self.loss_conf)
        self._val["loss"].append(float(terms["loss"]))
        err = relative_errors_deg(out["R"], out["t"], batch["R"], batch["t"], batch["mask"])
        ident = identity_predictor(batch["R"])
        err_id = relative_errors_deg(ident["R"], ident["t"], batch["R"], batch["t"], batch["mask"])
        for k in ("rot", "tdir"):
            self._val[k].append(err[k])
            self._val[k + "_id"].append(err_id[k])
        for b, m in enumerate(batch["mask"]):
            self._val["samples"].append({
                "scene": batch["scene"][b], "names": batch["names"][b],
                "R": out["R"][b][m].double().cpu().numpy(), "t": out["t"][b][m].double().cpu().numpy(),
                "R_gt": batch["R"][b][m].double().cpu().numpy(), "t_gt": batch["t"][b][m].double().cpu().numpy()})

    def on_validation_epoch_end(self) -> None:
        if not self._val.get("rot"):
            return
        cat = {k: _gather_cat(np.concatenate(self._val[k])) for k in ("rot", "tdir", "rot_id", "tdir_id")}
        metrics = summarize(cat["rot"], cat["tdir"], "val")
        metrics.update(summarize(cat["rot_id"], cat["tdir_id"], "val_identity"))
        metrics["val/loss"] = float(np.mean(_gather_cat(np.array(self._val["loss"]))))
        samples = _gather_list(self._val["samples"])
        maa = samples_maa(samples, self.thresholds) if self.thresholds else None
        if maa is not None:
            metrics["val/mAA"] = maa
            key = tuple(s["scene"] for s in samples)  # fixed val samples: the baseline's score is too
            if self._maa_identity is None or self._maa_identity[0] != key:
                ident = [{**s, "R": np.repeat(np.eye(3)[None], len(s["R"]), 0), "t": np.zeros_like(s["t"])}
                         for s in samples]
                self._maa_identity = (key, samples_maa(ident, self.thresholds))
            if self._maa_identity[1] is not None:
                metrics["val_identity/mAA"] = self._maa_identity[1]
        # every rank holds the same gathered numbers: no further reduction needed
        for k, v in metrics.items():
            self.log(k, v, prog_bar=k in ("val/rot_err_median", "val/mAA"), sync_dist=False, rank_zero_only=False)

    def configure_optimizers(self):
        c = self.optim_conf
        bb = [p for n, p in self.model.named_parameters() if p.requires_grad and n.startswith("backbone.")]
        rest = [p for n, p in self.model.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
        groups = [{"params": rest, "lr": c["lr"]}]
        if bb:
            groups.append({"params": bb, "lr": c["lr"] * c["backbone_lr_scale"]})
        opt = torch.optim.AdamW(groups, lr=c["lr"], weight_decay=c["weight_decay"])
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
        # only what is trained, plus what load_checkpoint needs to rebuild the model
        keep = {"model." + k for k in trained_state_dict(self.model)}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        checkpoint["memposer"] = checkpoint_meta(self.model)
