"""Fuzz corpus: bad inputs and faults, each ending in a complete submission (every image has its
row) and a line that says what happened. Inputs are generated here; one tiny pipeline config.

One pipeline run covers every odd image file (formats, names, links, sizes) and a one-image dataset;
the faults (truncated cache, kill -9 in every stage, a full disk, a locked work folder) reuse its data.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from memposer.data.imc import OUTLIER_SCENE, read_poses
from memposer.data.synthetic.competition import _rng
from memposer.data.synthetic.generate import load_conf, random_scene_spec, render_scene
from memposer.pipeline.images import load_image
from memposer.pipeline.run import STAGES

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--config", "cpu", "--num-threads", "1", "--quiet", "-v", "pairs.exhaustive_below=8", "pairs.k=5",
        "features.max_num_keypoints=256",
        "clustering.min_inliers=30", "reconstruction.workers=1"]
ANIMATED = ("anim.gif", "anim.webp")
BROKEN = {"tiny_1x1.png": "is too small", "dangling.jpg": "cannot read image"}


def infer(data: Path, out: Path, work: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "infer.py"), "--data", str(data), "--out", str(out), "--work", str(work),
           *FAST, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)


def _exif_rotated(img: Image.Image, path: Path) -> None:
    """Stored turned 90 degrees, with EXIF orientation 6 (turn clockwise to view): reads back upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    img.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)


def _animated(img: Image.Image, path: Path) -> None:
    frames = [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """``test/odd``: one rendered street scene stored in every odd way, plus broken files;
    ``test/single``: a one-image dataset. Images outside the split are what the symlink points to."""
    root = tmp_path_factory.mktemp("fuzz")
    conf = load_conf("tiny", long_side=200)
    rng = _rng(11, 0)
    views = [Image.fromarray(im) for im in render_scene(random_scene_spec(conf, rng, n_images=9, style="street"),
                                                        rng, conf)["images"]]
    odd = root / "test" / "odd"
    odd.mkdir(parents=True)
    views[0].save(odd / "plain.png")
    views[1].save(odd / "ünïcode name 1.png")
    views[2].convert("CMYK").save(odd / "cmyk.jpg", quality=95)
    _exif_rotated(views[3], odd / "rotated.jpg")
    rgba = views[4].convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 255).point(lambda v: v if v else 0))
    rgba.paste((0, 0, 0, 0), (0, 0, 24, 24))  # a transparent corner
    rgba.quantize(64).save(odd / "palette_alpha.png")  # palette with transparency
    (root / "elsewhere").mkdir()
    views[5].save(root / "elsewhere" / "target.png")
    (odd / "link.png").symlink_to(root / "elsewhere" / "target.png")
    views[6].save(odd / "Case.png")
    views[7].save(odd / "case.png")
    _animated(views[8], odd / "anim.gif")
    _animated(views[0], odd / "anim.webp")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(odd / "tiny_1x1.png")
    (odd / "dangling.jpg").symlink_to(root / "elsewhere" / "gone.jpg")
    (root / "test" / "single").mkdir()
    views[0].save(root / "test" / "single" / "only.png")
    return root


def _names(corpus: Path) -> list:
    return sorted((p.parent.name, p.name) for p in (corpus / "test").glob("*/*"))


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz_run")
    res = infer(corpus / "test", tmp / "submission.csv", tmp / "work")
    return tmp / "submission.csv", res, tmp / "work"


def _complete(sub_path: Path, corpus: Path) -> dict:
    """Every image of the corpus exactly once; ``{(dataset, image): row}``."""
    rows = read_poses(sub_path)
    assert sorted((r.dataset, r.image) for r in rows) == _names(corpus)
    return {(r.dataset, r.image): r for r in rows}


@pytest.mark.slow
def test_odd_image_files(corpus, first_run):
    sub_path, res, work = first_run
    assert res.returncode == 0, res.stderr[-3000:]
    rows = _complete(sub_path, corpus)
    for name, why in BROKEN.items():
        assert any(name in line and why in line and "WARNING" in line for line in res.stderr.splitlines()), name
        assert rows[("odd", name)].scene == OUTLIER_SCENE and rows[("odd", name)].R is None
    for name in ANIMATED:
        assert f"{name} is animated (2 frames); using its first frame" in res.stderr
    with h5py.File(next((work / "odd").glob("features-*.h5")), "r") as f:
        readable = set(f.keys())
        w, h = f["rotated.jpg"].attrs["size"]
    # every file that is an image was read (CMYK, palette+alpha, unicode, link, both cases, animations)
    assert readable == {n for d, n in _names(corpus) if d == "odd"} - set(BROKEN)
    assert (w, h) == Image.open(corpus / "test" / "odd" / "plain.png").size  # EXIF orientation applied
    registered = [k for k, r in rows.items() if r.has_pose]
    assert len(registered) >= 5, res.stdout  # the scene is reconstructed despite the odd files
    assert "single: 0 clusters" in res.stderr and not rows[("single", "only.png")].has_pose


def test_exif_orientation_and_cmyk_decode(tmp_path):
    small = np.random.default_rng(0).integers(0, 255, (4, 6, 3), np.uint8)
    img = Image.fromarray(small).resize((180, 120), Image.Resampling.BICUBIC)  # smooth: JPEG keeps it
    want = np.asarray(img, np.float32) / 255
    _exif_rotated(img, tmp_path / "r.jpg")
    img.convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    for name in ("r.jpg", "c.jpg"):
        got = load_image(tmp_path / name, {"resize_max": None})
        assert got.size == (180, 120) and got.image.shape == (120, 180, 3)
        err = np.abs(got.image - want).mean()
        assert err < 0.03 and err < 0.3 * np.abs(got.image[::-1, ::-1] - want).mean(), name  # upright, right colours


def test_very_large_image_is_resized(tmp_path):
    """8000x6000: decoded once and resized to the preset's long side, keypoint scale recorded."""
    Image.linear_gradient("L").resize((8000, 6000)).convert("RGB").save(tmp_path / "big.jpg", quality=70)
    got = load_image(tmp_path / "big.jpg", {"resize_max": 640})
    assert got.size == (8000, 6000) and got.image.shape == (480, 640, 3) and got.scale == pytest.approx(0.08)


@pytest.mark.slow
def test_truncated_cache_is_detected_and_recomputed(corpus, first_run, tmp_path):
    shutil.copytree(first_run[2], tmp_path / "work")
    feats = next((tmp_path / "work" / "odd").glob("features-*.h5"))
    with open(feats, "r+b") as f:  # what a run killed while writing leaves
        f.truncate(feats.stat().st_size // 2)
    res = infer(corpus / "test", tmp_path / "s.csv", tmp_path / "work")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"cache {feats} is unreadable" in res.stderr and "recomputed" in res.stderr
    assert (tmp_path / "s.csv").read_bytes() == first_run[0].read_bytes()


@pytest.mark.slow
def test_kill_9_in_every_stage_then_rerun_gives_the_same_file(corpus, first_run, tmp_path):
    """Killed as each stage starts (a little into it), then run again: the file equals an uninterrupted run."""
    out, work = tmp_path / "s.csv", tmp_path / "work"
    cmd = [sys.executable, str(ROOT / "infer.py"), "--data", str(corpus / "test"), "--out", str(out),
           "--work", str(work), *FAST, "--datasets", "odd"]
    killed = []
    for stage in STAGES:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        for line in proc.stderr:
            if f"starting {stage}" in line:
                time.sleep(0.3)  # into the stage, not at its first instruction
                os.killpg(proc.pid, signal.SIGKILL)
                killed.append(stage)
                break
        proc.wait()
        if stage == STAGES[0]:  # written before the first dataset starts: complete even now
            assert [r.image for r in read_poses(out)] == [n for d, n in _names(corpus) if d == "odd"]
    assert killed == list(STAGES)
    res = infer(corpus / "test", out, work, "--datasets", "odd")
    assert res.returncode == 0, res.stderr[-3000:]
    want = [line for line in first_run[0].read_text().splitlines() if ",odd," in line or line.startswith("image_id")]
    assert out.read_text().splitlines() == want


@pytest.mark.slow
def test_full_disk(corpus, tmp_path):
    """The work folder on a 64 KiB tmpfs: each dataset is refused before its caches are written (HDF5
    meeting a full disk can kill the process); every image still gets its row."""
    work = tmp_path / "work"
    work.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(work)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        res = infer(corpus / "test", tmp_path / "s.csv", work)
    finally:
        subprocess.run(["umount", "-l", str(work)])
    assert res.returncode == 1, res.stderr[-3000:]
    assert re.search(rf"only 0\.\d MiB free under the work folder {re.escape(str(work / 'odd'))}, about \d+ MiB needed",
                     res.stderr), res.stderr[-2000:]
    assert "pass --work on a larger disk" in res.stderr
    assert res.stdout.strip().splitlines()[-1].startswith("error: ")
    rows = _complete(tmp_path / "s.csv", corpus)
    assert not any(r.has_pose for r in rows.values())
