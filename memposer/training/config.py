"""Training configs: YAML files with ``base:`` inheritance, model presets by name, CLI overrides.

Overrides are ``section.key=value`` or ``--section.key value`` (values parsed as YAML), e.g.
``trainer.max_steps=100 --data.root data/synth logger=none model=tiny``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Sequence

from memposer.config import config_dir, deep_merge, parse_overrides, read_yaml, set_override

CONFIG_DIR = config_dir()

default_train_conf: Dict[str, Any] = {
    "seed": 0,
    "model": "default",          # a name under configs/model/, a YAML path, or an inline dict
    "data": {},                  # memposer.training.data.default_conf
    "loss": {},                  # memposer.models.losses.default_loss_conf
    "optim": {},                 # memposer.training.module.default_optim_conf
    "trainer": {},               # passed to pytorch_lightning.Trainer
    "logger": "wandb",           # wandb | csv | none
    "wandb": {"project": "memposer", "mode": "offline", "name": None},
    "output_dir": "outputs/train",
    "checkpoint": {"dirpath": None, "monitor": "val/rot_err_median", "mode": "min", "save_last": True},
    "export": None,              # model-only safetensors checkpoint written after training (best val)
    "export_dtype": "float16",   # halves the exported file; null keeps fp32
    "resume": None,              # Lightning checkpoint to resume from (optimizer, step, schedule)
    "init_from": None,           # start from the weights of an export (e.g. the shipped checkpoint)
    "attention": "auto",         # auto | sdpa | xformers
    "debug": {"param_checksum": False, "throughput_warmup": 20},
}


def resolve_model(model: Any, config_dir: Path = CONFIG_DIR) -> Dict[str, Any]:
    """Model preset name / YAML path / dict -> dict."""
    if isinstance(model, dict):
        return model
    p = Path(str(model))
    if p.suffix not in (".yaml", ".yml"):
        p = config_dir / "model" / f"{model}.yaml"
    if not p.is_file():
        presets = sorted(q.stem for q in (config_dir / "model").glob("*.yaml"))
        raise FileNotFoundError(f"model config {model!r} not found (presets: {presets})")
    return read_yaml(p)


def load_config(path: Path | str | None, overrides: Sequence[str] = ()) -> Dict[str, Any]:
    """Defaults <- YAML file (with base) <- overrides; the model preset is resolved to a dict."""
    conf = deep_merge(default_train_conf, read_yaml(Path(path)) if path else {})
    config_dir = Path(path).resolve().parent if path else CONFIG_DIR
    if not (config_dir / "model").is_dir():
        config_dir = CONFIG_DIR
    ov = parse_overrides(overrides)
    for k, v in ov:  # a whole-model override (model=tiny) comes before model.x=... overrides
        if k == "model":
            conf["model"] = v
    conf["model"] = resolve_model(conf["model"], config_dir)
    for k, v in ov:
        if k != "model":
            # model.* keys are checked by MemPoser's own strict merge; the preset named them
            set_override(conf, k, v, {**default_train_conf, "model": {}})
    unknown = set(conf) - set(default_train_conf)
    if unknown:
        raise KeyError(f"unknown config section(s) {sorted(unknown)}; known: {sorted(default_train_conf)}")
    return conf
