"""Wheels for a bundle: memposer's own wheel, installed distributions repacked, pip downloads for a target.

Two modes. *This machine* (no ``--python``): every dependency is the distribution installed here
(the one the tests ran against), repacked into a wheel from its ``RECORD``; no index is asked, so
it works offline. *Target* (``--python``/``--platform``): pip resolves memposer for that CPython
and platform (``pip install --dry-run --report``) and ``pip download --only-binary=:all:`` fetches
the wheels. Either way a fitting wheel already in the cache folder is reused.
"""
from __future__ import annotations

import base64
import email.parser
import hashlib
import importlib.metadata as md
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence

from packaging import tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

from memposer.kaggle.deps import Dist

log = logging.getLogger(__name__)

DEFAULT_PLATFORM = "manylinux_2_35_x86_64"  # Kaggle's image is Ubuntu 22.04 (glibc 2.35)
SOURCE_FILES = ("setup.cfg", "setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in")
_NOT_REPACKED = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")  # written by the installer


@dataclass
class Target:
    """Where the bundle will be installed; ``python=None`` means this interpreter and platform."""

    python: Optional[str] = None
    platforms: List[str] = field(default_factory=lambda: [DEFAULT_PLATFORM])
    implementation: str = "cp"

    @property
    def is_local(self) -> bool:
        return self.python is None

    def pip_args(self) -> List[str]:
        if self.is_local:
            return []
        args = ["--only-binary=:all:", "--python-version", self.python, "--implementation", self.implementation]
        for p in expand_platforms(self.platforms):
            args += ["--platform", p]
        return args

    def supported_tags(self) -> FrozenSet[tags.Tag]:
        if self.is_local:
            return frozenset(tags.sys_tags())
        ver = tuple(int(v) for v in self.python.split(".")[:2])
        plats = expand_platforms(self.platforms)
        interp = f"{self.implementation}{ver[0]}{ver[1]}"
        return frozenset([*tags.cpython_tags(ver, platforms=plats),
                          *tags.compatible_tags(ver, interpreter=interp, platforms=plats)])

    def describe(self) -> Dict[str, object]:
        if self.is_local:
            return {"mode": "this-machine", "python": sys.version.split()[0], "tag": str(next(iter(tags.sys_tags())))}
        return {"mode": "target", "python": self.python, "implementation": self.implementation,
                "platforms": expand_platforms(self.platforms)}


def expand_platforms(platforms: Sequence[str]) -> List[str]:
    """Add the older manylinux tags a ``manylinux_2_X`` system also runs (pip does not do this)."""
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    out: List[str] = []
    for p in platforms:
        head, _, arch = p.partition("_")
        if head in legacy:  # manylinux2014_x86_64 == manylinux_2_17_x86_64
            p = f"manylinux_2_{legacy[head]}_{arch}"
        out.append(p)
        if p.startswith("manylinux_2_"):
            minor, _, arch = p[len("manylinux_2_"):].partition("_")
            out += [f"manylinux_2_{m}_{arch}" for m in range(int(minor) - 1, 4, -1)]
            out += [f"{name}_{arch}" for name, m in legacy.items() if int(minor) >= m]
    return list(dict.fromkeys(out))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_pip(args: List[str], what: str) -> subprocess.CompletedProcess:
    """Run ``python -m pip ARGS``; on failure raise with pip's last lines (the useful part)."""
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"pip failed while {what}:\n{tail}")
    return proc


def source_root(source: Optional[Path] = None) -> Path:
    """The memposer checkout to build from: ``source`` or the one this package was imported from."""
    root = Path(source) if source else Path(__file__).resolve().parents[2]
    if not (root / "setup.cfg").is_file() or not (root / "memposer").is_dir():
        raise FileNotFoundError(f"{root} is not a memposer checkout (no setup.cfg + memposer/); pass --source")
    return root


def build_own_wheel(source: Path, dest: Path) -> Path:
    """``pip wheel --no-deps`` of a clean copy of the checkout (no stale ``build/`` or egg-info leaks in)."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("memposer-*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory(prefix="memposer-src-") as tmp:
        for name in SOURCE_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp)
        for name in ("memposer", "configs"):  # configs/: the wheel's data_files (inference presets)
            if (source / name).is_dir():
                shutil.copytree(source / name, Path(tmp) / name,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        # No build isolation: it would ask an index for setuptools, and there may be none.
        run_pip(["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dest), tmp], "building memposer's wheel")
    built = sorted(dest.glob("memposer-*.whl"))
    if len(built) != 1:
        raise RuntimeError(f"expected one memposer wheel in {dest}, found {built}")
    return built[0]


def wheel_metadata(wheel: Path) -> Dist:
    """Name, version and ``Requires-Dist`` of a wheel file."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        msg = email.parser.Parser().parsestr(z.read(meta).decode("utf-8"))
    return Dist(canonicalize_name(msg["Name"]), msg["Version"], list(msg.get_all("Requires-Dist") or []))


def _compressed_tags(wheel_text: str) -> str:
    """``py-abi-platform`` of a WHEEL file's ``Tag:`` lines, compressed the wheel-filename way."""
    parts: List[List[str]] = [[], [], []]
    for line in wheel_text.splitlines():
        if line.startswith("Tag:"):
            for acc, value in zip(parts, line.split(":", 1)[1].strip().split("-")):
                acc.append(value)
    if not parts[0]:
        raise ValueError("WHEEL file has no Tag line")
    return "-".join(".".join(dict.fromkeys(p)) for p in parts)


def repack_installed(name: str, dest: Path) -> Path:
    """Rebuild the wheel of installed distribution ``name`` from the files its ``RECORD`` lists.

    Files outside site-packages are left out: console scripts (pip recreates them from
    ``entry_points.txt``) and, with a warning, other data files.
    """
    dist = md.distribution(name)
    wheel_text, files = dist.read_text("WHEEL"), dist.files
    if wheel_text is None or files is None:
        raise RuntimeError(f"{name} {dist.version} was not installed from a wheel (no WHEEL/RECORD); "
                           "cannot repack it, install it with pip first")
    info_dir = next(f.parts[0] for f in files if len(f.parts) == 2 and f.parts[0].endswith(".dist-info"))
    wheel = Path(dest) / f"{info_dir[:-len('.dist-info')]}-{_compressed_tags(wheel_text)}.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    record, dropped = [], []
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for f in files:
            arc = f.as_posix()
            if arc.startswith(("../", "/")):
                dropped += [] if "/bin/" in arc else [arc]
                continue
            if "__pycache__" in f.parts or (f.parts[0] == info_dir and f.name in _NOT_REPACKED):
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            z.writestr(arc, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        z.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")
    tmp.replace(wheel)
    if dropped:
        log.warning("%s: files outside site-packages not carried: %s", name, ", ".join(dropped[:5]))
    return wheel


def resolve_for_target(wheel: Path, target: Target, constraints: Sequence[Path] = (),
                       pip_args: Sequence[str] = ()) -> Dict[str, Dist]:
    """Everything pip would install with ``wheel`` on ``target`` (metadata only; nothing big fetched)."""
    with tempfile.TemporaryDirectory(prefix="memposer-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "-q", "--target", str(Path(tmp) / "t"),
                "--report", str(report), *target.pip_args(), *pip_args]
        for c in constraints:
            args += ["-c", str(c)]
        run_pip([*args, str(wheel)], f"resolving memposer for {target.describe()}")
        data = json.loads(report.read_text())
    out: Dict[str, Dist] = {}
    for item in data.get("install", []):
        meta = item["metadata"]
        name = canonicalize_name(meta["name"])
        out[name] = Dist(name, meta["version"], list(meta.get("requires_dist") or []))
    return out


def find_cached(cache: Path, dist: Dist, supported: FrozenSet[tags.Tag]) -> Optional[Path]:
    """A wheel of exactly ``dist`` in ``cache`` that runs on ``supported`` tags, if any."""
    want = Version(dist.version)
    for path in sorted(cache.glob("*.whl")):
        try:
            name, version, _, wtags = parse_wheel_filename(path.name)
        except ValueError:
            continue
        if canonicalize_name(name) == dist.name and version == want and wtags & supported:
            return path
    return None


def collect_wheels(dists: Sequence[Dist], cache: Path, target: Target, pip_args: Sequence[str] = ()) -> Dict[str, Path]:
    """A wheel for every dist: from ``cache``, else repacked (this machine) or downloaded (target) into it."""
    cache.mkdir(parents=True, exist_ok=True)
    supported = target.supported_tags()
    found = {d.name: find_cached(cache, d, supported) for d in dists}
    todo = [d for d in dists if found[d.name] is None]
    if todo and target.is_local:
        log.info("repacking %d installed distributions into %s", len(todo), cache)
        for d in todo:
            found[d.name] = repack_installed(d.name, cache)
    elif todo:
        pins = [f"{d.name}=={d.version}" for d in todo]
        log.info("downloading %d wheels into %s: %s", len(pins), cache, " ".join(pins))
        run_pip(["download", "--no-deps", "-q", "-d", str(cache), *target.pip_args(), *pip_args, *pins],
                "downloading wheels")
        found.update({d.name: find_cached(cache, d, supported) for d in todo})
    absent = [f"{n}" for n, p in found.items() if p is None]
    if absent:
        raise RuntimeError(f"no wheel for {', '.join(absent)} that runs on {target.describe()}")
    return found  # type: ignore[return-value]


def place(src: Path, dest_dir: Path) -> Path:
    """Hard-link (cheap) or copy ``src`` into ``dest_dir``."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / src.name
    if dest.exists():
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)
    return dest
