"""A virtual environment that looks like a Kaggle image: the preinstalled set and nothing else.

``--system-site-packages`` would leak every package of this machine (memposer and its own
dependencies included), so a rehearsal could pass where Kaggle fails. Instead the venv gets a
*shadow* folder of symlinks to exactly the files (per ``RECORD``) of the chosen distributions and
their dependency closure, ``dist-info`` included, so pip sees them as installed. A ``.pth`` line
adds the shadow after the venv's own site-packages. A folder shared with a distribution that is
not exposed (a namespace package) is recreated and only the exposed entries inside it are linked.
"""
from __future__ import annotations

import importlib.metadata as md
import logging
import os
import subprocess
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Set

from packaging.utils import canonicalize_name

from memposer.kaggle.deps import DEFAULT_PREINSTALLED, installed_dists, marker_environment, matches_any, walk

log = logging.getLogger(__name__)

KERNEL_PACKAGES = ("ipykernel",)  # what a notebook kernel runs on: on Kaggle, needed here to rehearse


@dataclass
class KaggleLikeVenv:
    root: Path
    python: Path
    exposed: Dict[str, str]  # distribution name -> version


def preinstalled_closure(patterns: Sequence[str]) -> Dict[str, str]:
    """Installed distributions matching ``patterns`` plus everything they require (name -> version)."""
    dists = installed_dists()
    roots = [n for n in dists if matches_any(n, patterns) and n != "memposer"]
    closure = walk(roots, dists, marker_environment(), stop=lambda n: n == "memposer")
    return {n: d.version for n, d in closure.needed.items()}


class _Node:
    """A path in site-packages: its children and the distributions owning files below it."""

    def __init__(self) -> None:
        self.children: Dict[str, _Node] = {}
        self.owners: Set[str] = set()


def _ownership_tree(site: Path) -> _Node:
    root = _Node()
    for d in md.distributions(path=[str(site)]):
        name = canonicalize_name(d.metadata["Name"] or "")
        for f in d.files or []:
            if f.parts and f.parts[0] == "..":
                continue  # console scripts: outside site-packages
            node = root
            for part in f.parts:
                node.owners.add(name)
                node = node.children.setdefault(part, _Node())
            node.owners.add(name)
    return root


def _link(node: _Node, src: Path, dest: Path, exposed: Set[str]) -> int:
    """Symlink the largest subtrees of ``node`` owned by exposed distributions only; return the count."""
    count = 0
    for name, child in node.children.items():
        if name == "__pycache__" or not (child.owners & exposed) or not (src / name).exists():
            continue
        if child.owners <= exposed or not child.children:
            (dest / name).symlink_to(src / name)
            count += 1
        else:
            (dest / name).mkdir()
            count += _link(child, src / name, dest / name, exposed)
    return count


def make_kaggle_like_venv(root: Path, preinstalled: Sequence[str] = DEFAULT_PREINSTALLED + KERNEL_PACKAGES
                          ) -> KaggleLikeVenv:
    """A fresh venv at ``root`` seeing only the ``preinstalled`` closure of this interpreter (pip included)."""
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} exists; a Kaggle-like venv must start fresh")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    python = root / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    exposed = preinstalled_closure(preinstalled)
    shadow = root / "kaggle-preinstalled"
    shadow.mkdir()
    n = 0
    for sys_site in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]):
        n += _link(_ownership_tree(Path(sys_site)), Path(sys_site), shadow, set(exposed))
    (Path(site) / "_kaggle_preinstalled.pth").write_text(f"import site; site.addsitedir({str(shadow)!r})\n")
    log.info("venv %s: %d preinstalled distributions exposed via %d links", root, len(exposed), n)
    return KaggleLikeVenv(root, python, exposed)


def clean_pip_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment where pip reads no config file and no ``PIP_*`` variable (no index, no find-links)."""
    env = {k: v for k, v in (base or os.environ).items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env
