"""Train a MemPoser: ``main(conf)`` builds data, model, logger, callbacks and a Lightning Trainer."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict

import pytorch_lightning as pl
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from memposer.models.attention import set_backend
from memposer.models.checkpoint import load_checkpoint, save_checkpoint
from memposer.config import merge_strict
from memposer.models.mempose import MemPoser
from memposer.training.callbacks import ParamChecksum, SaveLast, Throughput
from memposer.training.data import TrackDataModule
from memposer.training.module import MemPoserModule

log = logging.getLogger(__name__)


def make_logger(conf: Dict[str, Any]):
    kind = str(conf["logger"]).lower()
    out = Path(conf["output_dir"])
    if kind in ("none", "false", "off"):
        return False
    if kind == "wandb":
        from pytorch_lightning.loggers import WandbLogger  # noqa: PLC0415
        out.mkdir(parents=True, exist_ok=True)
        w = conf["wandb"]
        return WandbLogger(project=w.get("project"), name=w.get("name"), save_dir=str(out),
                           offline=w.get("mode", "offline") == "offline")
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger  # noqa: PLC0415
        return CSVLogger(str(out), name="csv")
    raise ValueError(f"logger must be wandb, csv or none, got {conf['logger']!r}")


# Options that may differ between an ``init_from`` source and the model trained from it: the
# refinement passes and the EXIF flag are new modules on top of the same decoder, initialised fresh.
_INIT_FREE = {"refine_iters", "refine_depth", "max_tracks", "exif_input"}


def init_weights(model: MemPoser, path: str) -> None:
    """Copy an export's weights into ``model``; modules the source lacks (refinement) start fresh."""
    src = load_checkpoint(path)
    differ = {k for k in model.conf if src.conf.get(k) != model.conf[k]} - _INIT_FREE
    if differ:
        raise ValueError(f"init_from {path}: its model config {src.conf} differs from {model.conf} in {sorted(differ)}")
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"init_from {path}: tensors the model does not have: {unexpected[:8]}")
    fresh = sorted({k.split(".")[0] for k in missing})
    log.info("weights initialised from %s%s", path, f"; new modules start fresh: {fresh}" if fresh else "")


def main(conf: Dict[str, Any]) -> Dict[str, float]:
    """Train (or resume) and export the model-only checkpoint; returns the final logged metrics."""
    pl.seed_everything(conf["seed"], workers=True)
    set_backend(conf["attention"])
    model_conf = merge_strict(MemPoser.default_conf, conf["model"], "model.")
    dm = TrackDataModule(conf["data"], seed=conf["seed"])
    module = MemPoserModule(model_conf, conf["loss"], conf["optim"])
    log.info("MemPoser: %.2f M parameters", module.model.num_parameters() / 1e6)
    if conf["init_from"]:
        init_weights(module.model, conf["init_from"])
    out = Path(conf["output_dir"])
    ck = conf["checkpoint"]
    ck_dir = ck.get("dirpath") or str(out / "checkpoints")
    ckpt_cb = ModelCheckpoint(dirpath=ck_dir, monitor=ck.get("monitor"), mode=ck.get("mode", "min"),
                              save_last=False, filename="step{step}", auto_insert_metric_name=False)
    callbacks = [ckpt_cb, Throughput(conf["debug"].get("throughput_warmup", 20), str(out / "throughput.json"))]
    if ck.get("save_last", True):
        callbacks.append(SaveLast(ck_dir))
    logger = make_logger(conf)
    if logger:
        callbacks.append(LearningRateMonitor("step"))
    if conf["debug"].get("param_checksum"):
        callbacks.append(ParamChecksum())
    try:
        trainer = pl.Trainer(**conf["trainer"], logger=logger, callbacks=callbacks, default_root_dir=str(out))
    except TypeError as e:
        raise ValueError(f"bad trainer option in the config: {e}") from None
    trainer.fit(module, dm, ckpt_path=conf["resume"])
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        if conf["export"]:
            best = ckpt_cb.best_model_path
            model = load_checkpoint(best) if best and Path(best).is_file() else module.model
            path = save_checkpoint(model, conf["export"], extra={"metrics": metrics, "source": best or "last",
                                                                 "steps": trainer.global_step},
                                   dtype=conf["export_dtype"])
            log.info("exported model checkpoint %s (%.1f MB) from %s", path, path.stat().st_size / 2 ** 20,
                     best or "the last weights")
    return metrics
