"""YAML configs shared by training and inference: where presets live (``configs/`` of a checkout,
else the copy installed with the wheel), ``base:`` inheritance, ``key.sub=value`` overrides."""
from __future__ import annotations

import copy
import difflib
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import re

import yaml


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``3e-4`` (no dot) as a string; people write learning rates that way."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def _yaml(text):
    return yaml.load(text, Loader=_Loader)


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


def deep_merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_strict(base: Dict[str, Any], over: Optional[Dict[str, Any]], where: str = "") -> Dict[str, Any]:
    """``deep_merge`` after ``check_keys``: every key of ``over`` must exist in ``base`` (``where`` names it)."""
    check_keys(over or {}, base, where)
    return deep_merge(base, over or {})


def read_yaml(path: Path) -> Dict[str, Any]:
    """A YAML config, with its ``base:`` file (relative to it) merged underneath."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as f:
        conf = _yaml(f) or {}
    if not isinstance(conf, dict):
        raise ValueError(f"{path} must hold a mapping")
    base = conf.pop("base", None)
    if base:
        conf = deep_merge(read_yaml(path.parent / base), conf)
    return conf


def parse_overrides(args: Sequence[str]) -> List[Tuple[str, Any]]:
    """``a.b=1``, ``--a.b 1`` and ``--a.b=1`` -> [("a.b", 1)]."""
    out, i = [], 0
    args = list(args)
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            a = a[2:]
            if "=" not in a:
                if i + 1 >= len(args):
                    raise ValueError(f"override --{a} has no value")
                a, i = f"{a}={args[i + 1]}", i + 1
        if "=" not in a:
            raise ValueError(f"cannot parse override {args[i]!r}: use key.sub=value or --key.sub value")
        k, v = a.split("=", 1)
        out.append((k, _yaml(v) if v != "" else None))
        i += 1
    return out


def unknown_key_message(path: str, known: Dict[str, Any]) -> str:
    """``unknown config key pairs.kk (did you mean pairs.k?); valid keys of pairs: ...``."""
    *parent, last = path.split(".")
    where = ".".join(parent)
    near = difflib.get_close_matches(last, list(known), n=1)
    hint = f" (did you mean {'.'.join([*parent, near[0]])}?)" if near else ""
    return (f"unknown config key {path}{hint}; valid keys{' of ' + where if where else ''}: "
            f"{', '.join(sorted(known))}")


def _free_form(default: Any) -> bool:
    """An empty dict in the defaults is a section whose keys its own code checks (e.g. Trainer kwargs)."""
    return isinstance(default, dict) and not default


def check_keys(conf: Dict[str, Any], known: Dict[str, Any], where: str = "") -> None:
    """Raise ``KeyError`` on the first key of ``conf`` (at any depth) that ``known`` does not have."""
    for k, v in conf.items():
        path = f"{where}{k}"
        if k not in known:
            raise KeyError(unknown_key_message(path, known))
        if isinstance(v, dict) and isinstance(known[k], dict) and not _free_form(known[k]):
            check_keys(v, known[k], path + ".")


def set_override(conf: Dict[str, Any], key: str, value: Any, known: Dict[str, Any]) -> None:
    """Set ``a.b.c = value`` in ``conf``; every part must be a key of ``known`` at its level."""
    parts = key.split(".")
    d, k = conf, known
    for i, p in enumerate(parts):
        path = ".".join(parts[:i + 1])
        if k is not None:
            if p not in k:
                raise KeyError(unknown_key_message(path, k))
            k = None if _free_form(k[p]) else k[p]
            if i < len(parts) - 1 and k is not None and not isinstance(k, dict):
                raise KeyError(f"config key {path} is a value, not a section: set it as {path}=VALUE")
        if i == len(parts) - 1:
            break
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    if isinstance(k, dict) and k and isinstance(value, dict):
        check_keys(value, k, key + ".")
    d[parts[-1]] = value
