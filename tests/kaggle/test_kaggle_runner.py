"""The notebook's runner: scans test/ itself, contains every failure of a dataset, honours budgets."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from memposer.data.imc import read_submission
from memposer.kaggle.runner import format_summary, resolve_inputs, run_competition

FAKE = [sys.executable, str(Path(__file__).with_name("fake_pipeline.py"))]


def _competition(root: Path, datasets: dict) -> Path:
    """A competition folder with ``{dataset: n_images}`` under test/ and a misleading sample_submission."""
    for ds, n in datasets.items():
        (root / "test" / ds).mkdir(parents=True)
        for i in range(n):
            (root / "test" / ds / f"im{i:02d}.png").write_bytes(b"")
    (root / "test" / "good" / "notes.txt").write_text("not an image")
    (root / "sample_submission.csv").write_text(
        "image_id,dataset,scene,image,rotation_matrix,translation_vector\n"
        "x,not_in_test,outliers,a.png,nan;nan;nan;nan;nan;nan;nan;nan;nan,nan;nan;nan\n")
    return root


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child that nobody reaped yet is a zombie: gone for our purpose.
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_failures_become_nan_rows_and_the_rest_is_kept(tmp_path):
    comp = _competition(tmp_path / "comp", {"good": 5, "crash": 3, "hang": 4, "garbage": 2, "silent": 2, "empty": 0})
    out = tmp_path / "working" / "submission.csv"
    t0 = time.time()
    results = run_competition(comp, out, conf={"pipeline": FAKE, "budget_per_dataset_s": 4.0},
                              work_dir=tmp_path / "work")
    elapsed = time.time() - t0

    rows = read_submission(out)
    assert sorted((r.dataset, r.image) for r in rows) == sorted(
        [("good", f"im{i:02d}.png") for i in range(5)] + [("crash", f"im{i:02d}.png") for i in range(3)]
        + [("hang", f"im{i:02d}.png") for i in range(4)] + [("garbage", f"im{i:02d}.png") for i in range(2)]
        + [("silent", f"im{i:02d}.png") for i in range(2)])
    by_ds = {}
    for r in rows:
        by_ds.setdefault(r.dataset, []).append(r)
    assert all(r.has_pose for r in by_ds["good"]) and {r.scene for r in by_ds["good"]} == {"scene0", "scene1"}
    np.testing.assert_allclose(sorted(r.t[0] for r in by_ds["good"]), [0, 1, 2, 3, 4])
    for ds in ("crash", "hang", "garbage", "silent"):
        assert not any(r.has_pose for r in by_ds[ds]) and {r.scene for r in by_ds[ds]} == {"outliers"}, ds
    text = out.read_text()
    assert "not_in_test" not in text and "not_in_folder" not in text

    status = {r.dataset: r for r in results}
    assert status["good"].status == "ok" and status["good"].posed == 5 and status["good"].scenes == 2
    assert status["crash"].status.startswith("RuntimeError: pipeline failed (exit status 1)")
    assert status["hang"].status.startswith("TimeoutError") and 3.5 < status["hang"].seconds < 10
    assert status["garbage"].status.startswith("ValueError")
    assert status["silent"].status.startswith("RuntimeError: pipeline exited 0 but wrote no")
    assert status["empty"].status == "empty"
    assert elapsed < 30
    hang_pid = int((tmp_path / "work" / "hang" / "work" / "hang.pid").read_text())
    assert not _pid_alive(hang_pid), "the timed-out pipeline process must be killed"
    assert "simulated crash" in (tmp_path / "work" / "crash" / "pipeline.log").read_text()
    assert "hang" in format_summary(results)


def test_total_budget_skips_the_remaining_datasets(tmp_path):
    comp = _competition(tmp_path / "comp", {"good": 2, "hang": 2, "later": 3})
    out = tmp_path / "submission.csv"
    results = run_competition(comp, out, conf={"pipeline": FAKE, "budget_per_dataset_s": 60.0,
                                               "total_budget_s": 4.0, "min_left_s": 2.0}, work_dir=tmp_path / "w")
    status = {r.dataset: r.status for r in results}
    assert status["good"] == "ok"
    assert status["hang"].startswith("TimeoutError: still running")
    assert status["later"].startswith("TimeoutError: not started")
    assert len(read_submission(out)) == 7 and sum(r.has_pose for r in read_submission(out)) == 2


def test_no_test_folder_writes_an_empty_submission(tmp_path):
    out = tmp_path / "submission.csv"
    assert run_competition(tmp_path / "nothing", out, conf={"pipeline": FAKE}) == []
    assert out.read_text().strip() == "image_id,dataset,scene,image,rotation_matrix,translation_vector"


def test_inputs_come_from_the_bundle_and_reach_the_pipeline(tmp_path):
    bundle = tmp_path / "bundle"
    (bundle / "checkpoints").mkdir(parents=True)
    (bundle / "checkpoints" / "model.ckpt").write_bytes(b"x")
    (bundle / "configs" / "infer").mkdir(parents=True)
    (bundle / "configs" / "infer" / "fast.yaml").write_text("a: 1\n")
    (bundle / "manifest.json").write_text(json.dumps({
        "checkpoints": [{"file": "checkpoints/model.ckpt"}], "default_config": "fast",
        "dinov2": str(tmp_path / "missing_dinov2.pth")}))
    inputs = resolve_inputs(str(bundle))
    assert inputs.checkpoint == str(bundle / "checkpoints" / "model.ckpt")
    assert inputs.config == str(bundle / "configs" / "infer" / "fast.yaml")
    assert inputs.dinov2 is None  # recorded path absent here: run without rather than fail every dataset
    assert resolve_inputs(str(bundle), config="other").config == "other"  # unknown: passed on as a preset name

    comp = _competition(tmp_path / "comp", {"good": 2})
    run_competition(comp, tmp_path / "s.csv", bundle_dir=str(bundle), work_dir=tmp_path / "w",
                    conf={"pipeline": FAKE, "poses": "seeded", "num_threads": 1, "extra_args": ["--x", 1]})
    argv = (tmp_path / "w" / "good" / "work" / "argv.txt").read_text().splitlines()
    assert argv[argv.index("--config") + 1] == inputs.config
    assert argv[argv.index("--checkpoint") + 1] == inputs.checkpoint
    assert argv[argv.index("--poses") + 1] == "seeded" and argv[argv.index("--num-threads") + 1] == "1"
    assert "--dinov2" not in argv and argv[-2:] == ["--x", "1"]
    assert os.listdir(Path(argv[argv.index("--data") + 1])) == ["good"]  # the pipeline sees one dataset


def test_cli_run(tmp_path):
    comp = _competition(tmp_path / "comp", {"good": 3, "crash": 2})
    out = tmp_path / "sub.csv"
    proc = subprocess.run([sys.executable, "-m", "memposer.kaggle", "run", "--competition", str(comp),
                           "--out", str(out), "--pipeline", " ".join(FAKE), "--budget", "20"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "crash" in proc.stdout and "RuntimeError" in proc.stdout
    rows = read_submission(out)
    assert len(rows) == 5 and sum(r.has_pose for r in rows) == 3
