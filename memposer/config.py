"""Where the YAML presets live: ``configs/`` of a checkout, else the copy installed with the wheel."""
from __future__ import annotations

import sys
from pathlib import Path


def config_dir() -> Path:
    """``configs/`` beside the package (a checkout or editable install), else ``<prefix>/share/memposer/configs``."""
    repo = Path(__file__).resolve().parents[1] / "configs"
    if repo.is_dir():
        return repo
    return Path(sys.prefix) / "share" / "memposer" / "configs"


def find_preset(kind: str, name: str) -> Path:
    """A YAML file given by path, or by preset name under ``configs/<kind>/``."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise FileNotFoundError(f"config file not found: {p}")
        return p
    p = config_dir() / kind / f"{name}.yaml"
    if not p.is_file():
        have = sorted(q.stem for q in (config_dir() / kind).glob("*.yaml"))
        raise FileNotFoundError(f"no {kind} preset {name!r} (presets: {have})")
    return p
