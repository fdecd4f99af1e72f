"""infer.py refuses every mistake before any dataset starts: one line naming the problem and the
fix, exit code 2 (in-process, so that each case costs milliseconds)."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memposer.data.imc import read_poses
from memposer.pipeline import checks, cli
from memposer.pipeline import run as run_mod
from memposer.pipeline.workdir import work_lock

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def split(tmp_path) -> Path:
    """A competition root ``comp/{train,test}/ds/*.png`` (the test split is returned)."""
    for s in ("train", "test"):
        (tmp_path / "comp" / s / "ds").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / "comp" / s / "ds" / f"{i}.png")
    return tmp_path / "comp" / "test"


@pytest.fixture
def refuse(monkeypatch, tmp_path, caplog):
    """``refuse(*argv) -> message``: main must exit 2 with one error line and never start the run."""
    monkeypatch.setattr(cli, "setup_logging", lambda verbose: None)  # keep pytest's log capture
    monkeypatch.setattr(run_mod, "run_pipeline", lambda *a, **k: pytest.fail("a dataset started"))

    def go(*argv) -> str:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            code = cli.main([*argv] if "--out" in argv else [*argv, "--out", str(tmp_path / "out" / "s.csv")])
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert code == 2 and len(errors) == 1, (code, errors)
        return errors[0]

    return go


def test_missing_data_folder(refuse, tmp_path):
    assert "--data {} does not exist; pass the competition's test/ folder".format(tmp_path / "nope") in refuse(
        "--data", str(tmp_path / "nope"))


def test_empty_data_folder(refuse, tmp_path):
    (tmp_path / "empty" / "ds").mkdir(parents=True)
    assert f"no images in {tmp_path / 'empty'}" in refuse("--data", str(tmp_path / "empty"))


def test_a_dataset_folder_instead_of_the_split(refuse, split):
    msg = refuse("--data", str(split / "ds"))
    assert "holds files (0.png, ...) but no dataset folders; pass its parent, --data " + str(split) in msg


def test_competition_root_runs_its_test_split(split, caplog):
    with caplog.at_level(logging.WARNING):
        assert checks.resolve_data_dir(split.parent) == split
    assert f"is the competition root: running its test/ folder {split}" in caplog.text
    assert f"pass --data {split.parent / 'train'} for the labelled split" in caplog.text


@pytest.mark.parametrize("argv,expect", [
    (["--config", "fast"], "no infer preset 'fast' (presets: ['cpu', 'cpu_fast', 'default'])"),
    (["pairs.kk=5"], "unknown config key pairs.kk (did you mean pairs.k?); valid keys of pairs:"),
    (["clustering.method=kmeans"], "clustering.method=kmeans is not one of components, louvain, none"),
    (["--dinov2", "/nonexistent/dinov2.pth"], "--dinov2 /nonexistent/dinov2.pth does not exist"),
    (["--poses", "memposer"], "poses memposer needs a MemPoser checkpoint: pass --checkpoint"),
    (["--checkpoint", "/nonexistent.safetensors"], "--checkpoint /nonexistent.safetensors is not a file"),
    (["--poses", "seeded", "reconstruction.poses=colmap"], "--poses seeded contradicts reconstruction.poses=colmap"),
    (["reconstruction.mapper=global", "reconstruction.structure_less_fallback=true"],
     "reconstruction.structure_less_fallback works with the incremental mapper only"),
])
def test_bad_settings(refuse, split, argv, expect):
    assert expect in refuse("--data", str(split), *argv)


@pytest.fixture
def junk(tmp_path) -> Path:
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    return tmp_path / "junk.safetensors"


def test_bad_checkpoint_file(refuse, split, junk):
    assert f"--checkpoint {junk} cannot be loaded" in refuse("--data", str(split), "--checkpoint", str(junk))


@pytest.mark.slow  # imports timm (a few seconds)
def test_bad_dinov2_file(refuse, split, junk):
    assert f"--dinov2 {junk}: could not read backbone weights" in refuse("--data", str(split), "--dinov2", str(junk))


def test_output_paths(refuse, split, tmp_path):
    (tmp_path / "dir.csv").mkdir()
    assert "is a folder; pass a file name" in refuse("--data", str(split), "--out", str(tmp_path / "dir.csv"))
    (tmp_path / "w").write_text("a file")
    assert "--work {} is a file".format(tmp_path / "w") in refuse("--data", str(split), "--work", str(tmp_path / "w"))


def test_work_folder_in_use(refuse, split, tmp_path, monkeypatch):
    """A second run on a work folder another run holds stops at once (the first keeps its caches)."""
    monkeypatch.undo()  # the real run_pipeline: the lock is taken there, before any dataset
    monkeypatch.setattr(cli, "setup_logging", lambda verbose: None)
    monkeypatch.setattr(run_mod, "_run_locked", lambda *a, **k: pytest.fail("a dataset started"))
    with work_lock(tmp_path / "work"):
        msg = refuse("--data", str(split), "--work", str(tmp_path / "work"))
    assert f"--work {tmp_path / 'work'} is in use by another run (pid {os.getpid()}); wait for it" in msg


def test_read_only_output_folder(refuse, split, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: use a read-only mount instead
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)]).returncode:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        ro.chmod(0o555)
    try:
        msg = refuse("--data", str(split), "--out", str(ro / "s.csv"), "--work", str(tmp_path / "work"))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)])
        else:
            ro.chmod(0o755)
    assert f"cannot write to --out folder {ro} (Read-only file system" in msg or "(Permission denied" in msg
    assert "pass --out in a writable folder" in msg


def test_checkpoint_does_not_override_an_explicit_poses(split, caplog):
    args, overrides = cli.build_parser().parse_known_args(
        ["--data", str(split), "--checkpoint", "c.safetensors", "reconstruction.poses=colmap"])
    with caplog.at_level(logging.WARNING):
        conf = cli.apply_flags(cli.load_infer_config("cpu", overrides), args, overrides)
    assert conf["reconstruction"]["poses"] == "colmap"
    assert "--checkpoint c.safetensors is not used: poses colmap (reconstruction.poses=colmap)" in caplog.text
    args, overrides = cli.build_parser().parse_known_args(["--data", str(split), "--checkpoint", "c.safetensors"])
    assert cli.apply_flags(cli.load_infer_config("cpu", []), args, [])["reconstruction"]["poses"] == "seeded"


def _fake_dataset(fail: set, posed: bool):
    """run_dataset stand-in: raises for the datasets in ``fail``, else poses (or not) every image."""
    from memposer.data.imc import PoseRecord

    def run_dataset(ds, image_dir, names, work, conf, predictor, timings, progress):
        if ds in fail:
            raise RuntimeError(f"boom in {ds}")
        pose = (np.eye(3), np.zeros(3)) if posed else (None, None)
        return [PoseRecord(ds, "cluster0" if posed else "outliers", n, *pose) for n in names], {}, {}
    return run_dataset


@pytest.mark.parametrize("fail,posed,code,last", [
    ({"ds"}, True, 0, "wrote"),
    ({"ds", "ds2"}, True, 1, "error: every dataset failed (ds, ds2); {out} holds only nan poses"),
    (set(), False, 1, "error: no image got a pose; {out} holds 4 rows, all nan (run with -v to see why)"),
])
def test_failures_are_listed_and_no_pose_is_an_error(split, tmp_path, monkeypatch, capsys, fail, posed, code, last):
    shutil.copytree(split / "ds", split / "ds2")
    monkeypatch.setattr(cli, "setup_logging", lambda verbose: None)
    monkeypatch.setattr(run_mod, "run_dataset", _fake_dataset(fail, posed))
    out = tmp_path / "s.csv"
    assert cli.main(["--data", str(split), "--out", str(out), "--quiet"]) == code
    lines = capsys.readouterr().out.strip().splitlines()
    for ds in sorted(fail):
        assert f"failed dataset {ds}: RuntimeError: boom in {ds}; its images are nan in {out}" in lines
    if code:
        assert lines[-1] == last.format(out=out)
    assert len(read_poses(out)) == 4  # every image has its row whatever failed


@pytest.mark.slow
def test_a_run_without_any_pose_exits_1_as_a_user_sees_it(split, tmp_path):
    """The competition root as --data (its test/ runs), two flat images: nothing can be posed."""
    res = subprocess.run([sys.executable, str(ROOT / "infer.py"), "--data", str(split.parent), "--out",
                          str(tmp_path / "s.csv"), "--config", "cpu", "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 1, res.stderr[-2000:]
    assert "is the competition root: running its test/ folder" in res.stderr
    assert res.stdout.strip().splitlines()[-1].startswith("error: no image got a pose")
    assert len(read_poses(tmp_path / "s.csv")) == 2 and "Traceback" not in res.stderr
