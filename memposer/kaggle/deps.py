"""Which distributions a Kaggle bundle carries: memposer's dependency closure minus what Kaggle ships.

The closure is walked over ``Requires-Dist`` metadata, either of the distributions installed here
("this machine" mode) or of those pip resolved for a target Python and platform. The walk stops at
preinstalled packages: their own dependencies (torch -> sympy -> mpmath, ...) are Kaggle's business
and are only carried when something else that memposer needs requires them too.
"""
from __future__ import annotations

import fnmatch
import importlib.metadata as md
import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

log = logging.getLogger(__name__)

# Packages a Kaggle GPU notebook surely has (big, CUDA-bound or ubiquitous); fnmatch patterns on
# canonical names. Everything else memposer needs travels in the bundle, even when Kaggle has some
# version of it: pip keeps Kaggle's copy when it fits and installs the bundled one when it does not.
DEFAULT_PREINSTALLED: Tuple[str, ...] = (
    "torch", "torchvision", "torchaudio", "triton", "nvidia-*",
    "numpy", "scipy", "pandas", "scikit-learn", "pillow", "matplotlib", "pyyaml", "tqdm",
    "opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless",
    "pip", "setuptools", "wheel",
)
# What a notebook kernel itself runs on; present on Kaggle, needed to rehearse the notebook locally.
KERNEL_PACKAGES: Tuple[str, ...] = ("ipykernel",)


@dataclass
class Dist:
    """One distribution: canonical name, version and its ``Requires-Dist`` lines."""

    name: str
    version: str
    requires: List[str] = field(default_factory=list)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    name = canonicalize_name(name)
    return any(fnmatch.fnmatchcase(name, canonicalize_name(p)) for p in patterns)


def installed_dists(paths: Optional[List[str]] = None) -> Dict[str, Dist]:
    """Distributions visible on ``paths`` (default ``sys.path``); the first one found wins, like import."""
    out: Dict[str, Dist] = {}
    for d in md.distributions(path=paths) if paths is not None else md.distributions():
        name = d.metadata["Name"]
        if not name:
            continue
        key = canonicalize_name(name)
        if key not in out:
            out[key] = Dist(key, d.version, list(d.requires or []))
    return out


def marker_environment(python_version: Optional[str] = None) -> Dict[str, str]:
    """PEP 508 environment of this interpreter, or of a CPython ``python_version`` on Linux x86_64."""
    env = dict(default_environment())
    if python_version:
        env.update(python_version=".".join(python_version.split(".")[:2]), python_full_version=python_version
                   if python_version.count(".") == 2 else python_version + ".0",
                   sys_platform="linux", platform_system="Linux", platform_machine="x86_64", os_name="posix",
                   implementation_name="cpython", platform_python_implementation="CPython")
    return env


def _applies(req: Requirement, extras: Iterable[str], env: Dict[str, str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in ("", *extras))


@dataclass
class Closure:
    """Result of :func:`walk`: what to carry, what was left to the preinstalled set, what is absent."""

    needed: Dict[str, Dist]
    stopped: Dict[str, Set[str]]  # preinstalled name -> names of the packages that required it
    missing: Dict[str, Set[str]]  # required but unknown -> requirers


def walk(roots: Iterable[str], dists: Dict[str, Dist], env: Dict[str, str],
         stop: Callable[[str], bool] = lambda name: False, root_name: str = "<root>") -> Closure:
    """Breadth-first walk of requirement strings ``roots`` through ``dists``, extras included."""
    needed: Dict[str, Dist] = {}
    stopped: Dict[str, Set[str]] = {}
    missing: Dict[str, Set[str]] = {}
    expanded: Dict[str, Set[str]] = {}
    queue: List[Tuple[str, str, Set[str]]] = []  # (requirement, requirer, requirer's extras)

    queue.extend((r, root_name, set()) for r in roots)
    while queue:
        line, requirer, req_extras = queue.pop(0)
        try:
            req = Requirement(line)
        except InvalidRequirement:
            log.warning("%s: cannot parse requirement %r; ignored", requirer, line)
            continue
        if not _applies(req, req_extras, env):
            continue
        name = canonicalize_name(req.name)
        if stop(name):
            stopped.setdefault(name, set()).add(requirer)
            continue
        if name not in dists:
            missing.setdefault(name, set()).add(requirer)
            continue
        new_extras = {canonicalize_name(e) for e in req.extras}
        done = expanded.get(name)
        if done is not None and new_extras <= done:
            continue
        extras = (done or set()) | new_extras
        expanded[name] = extras
        needed[name] = dists[name]
        queue.extend((r, name, extras) for r in dists[name].requires)
    return Closure(needed, stopped, missing)
