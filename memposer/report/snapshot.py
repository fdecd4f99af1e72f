"""A PNG of a report's 3D view, rendered by headless Chromium: ``python -m memposer.report.snapshot REPORT OUT.png``.

``REPORT`` is a report folder (its first dataset's ``scene3d.html`` is taken, or ``--dataset``'s)
or an HTML page. Needs Debian's ``chromium`` (``apt-get install -y chromium``). The README's
picture is made this way (see README.md).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

from PIL import Image

log = logging.getLogger("memposer.report.snapshot")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("no Chromium found (apt-get install -y chromium)")


def scene_page(report: Path, dataset: Optional[str] = None) -> Path:
    """The 3D view page of ``dataset`` (default: the first, by folder name) in a report folder."""
    if report.is_file():
        return report
    pages = sorted(report.glob("*/scene3d.html"))
    if dataset is not None:
        pages = [p for p in pages if p.parent.name == dataset]
    if not pages:
        raise FileNotFoundError(f"{report}: no {dataset or '*'}/scene3d.html (write a report first)")
    return pages[0]


def snapshot(page: Path, out: Path, width: int = 1000, height: int = 780, colors: int = 64) -> Path:
    """Screenshot ``page`` at ``width`` x ``height`` into ``out`` (a palette PNG: small enough for a README)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        cmd = [find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}", "--virtual-time-budget=5000",
               f"--screenshot={shot}", page.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0 or not shot.is_file():
            raise RuntimeError(f"chromium could not render {page} (exit {proc.returncode}): {proc.stderr[-1000:]}")
        with Image.open(shot) as im:
            im.convert("RGB").quantize(colors).save(out, optimize=True)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m memposer.report.snapshot", description=__doc__.splitlines()[0])
    p.add_argument("report", type=Path, help="report folder or HTML page")
    p.add_argument("out", type=Path, help="PNG to write")
    p.add_argument("--dataset", help="which dataset's 3D view (default: the first)")
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--height", type=int, default=780)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = snapshot(scene_page(args.report, args.dataset), args.out, args.width, args.height)
    except (FileNotFoundError, RuntimeError) as e:
        log.error("%s", e)
        return 2
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
