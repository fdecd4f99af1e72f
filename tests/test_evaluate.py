"""``python -m memposer.evaluate`` end to end, as a user runs it."""
import subprocess
import sys

import numpy as np
import pytest

from memposer import geometry as geo
from memposer.data.imc import OUTLIER_SCENE, PoseRecord, write_poses, write_thresholds
from memposer.evaluate import cli

TH = [0.05, 0.1, 0.2, 0.5, 1.0]


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "memposer.evaluate", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.fixture
def files(tmp_path):
    """d1: scenes A (5) and B (5) + 2 outliers; cluster c1 = A + 2 of B -> mAA 50, clusterness 80.
    d2: scene X (6), exact poses moved by a similarity, one image missing its pose -> mAA 2/3."""
    rng = np.random.default_rng(0)
    labels, sub = [], []
    for sc, m in (("A", 5), ("B", 5), (OUTLIER_SCENE, 2)):
        for i in range(m):
            R = geo.random_rotation(rng)
            c = rng.normal(size=3) * 3
            labels.append(PoseRecord("d1", sc, f"{sc}{i}.png", R, geo.t_from_center(R, c)))
            cluster = "c1" if sc == "A" or (sc == "B" and i < 2) else ("c2" if sc == "B" else OUTLIER_SCENE)
            sub.append(PoseRecord("d1", cluster, f"{sc}{i}.png", R, geo.t_from_center(R, c)))
    s, Rs, ts = 3.0, geo.random_rotation(rng), rng.normal(size=3)
    for i in range(6):
        R = geo.random_rotation(rng)
        t = geo.t_from_center(R, rng.normal(size=3) * 3)
        labels.append(PoseRecord("d2", "X", f"x{i}.jpg", R, t))
        Rp, tp = geo.apply_similarity(R, t, s, Rs, ts)
        sub.append(PoseRecord("d2", "k", f"x{i}.jpg", *((None, None) if i == 5 else (Rp, tp))))
    write_poses(labels, tmp_path / "labels.csv")
    write_poses(sub, tmp_path / "submission.csv")
    write_thresholds({"d1": {"A": TH, "B": TH}, "d2": {"X": TH}}, tmp_path / "thresholds.csv")
    return tmp_path


def _summary(out: str):
    rows = {}
    for line in out.splitlines():
        parts = line.rsplit(None, 3)
        if len(parts) == 4 and parts[0] != "dataset":
            try:
                rows[parts[0].strip()] = tuple(float(v) for v in parts[1:])
            except ValueError:
                pass
    return rows


def test_cli_prints_scores(files):
    p = _run(files / "submission.csv", "--labels", files / "labels.csv", "--thresholds", files / "thresholds.csv")
    assert p.returncode == 0, p.stderr
    rows = _summary(p.stdout)
    # d1: 2 * 0.5 * 0.8 / 1.3; d2: 3 x (5 - 3) / (3 x (6 - 3)), clusterness 1
    assert rows["d1"] == (61.54, 50.00, 80.00)
    assert rows["d2"] == (80.00, 66.67, 100.00)
    assert rows["final (mean over datasets)"] == (70.77, 58.33, 90.00)
    assert "image,cluster,error" not in p.stdout
    assert "Traceback" not in p.stderr


def test_cli_table_and_dataset_filter(files):
    p = _run(files / "submission.csv", "--labels", files / "labels.csv", "--thresholds", files / "thresholds.csv",
             "--table", "--dataset", "d2")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "dataset,scene,image,cluster,error,passed,used_for_alignment,in_triplet"
    table = {ln.split(",")[2]: ln.split(",") for ln in lines[1:] if ln.startswith("d2,")}
    assert sorted(table) == [f"x{i}.jpg" for i in range(6)]
    for i in range(5):
        _, scene, _, cluster, err, passed, used, _ = table[f"x{i}.jpg"]
        assert (scene, cluster, passed, used) == ("X", "k", "11111", "1")
        assert float(err) < 1e-9
    assert table["x5.jpg"][3:6] == ["k", "", "00000"]  # no pose: no error, nothing passed
    assert sum(int(r[7]) for r in table.values()) == 3  # the best model's minimal triplet
    assert set(_summary(p.stdout)) == {"d2", "final (mean over datasets)"}


def test_cli_heuristic_search_same_on_easy_input(files, capsys):
    code = cli([str(files / "submission.csv"), "--labels", str(files / "labels.csv"),
                "--thresholds", str(files / "thresholds.csv"), "--heuristic"])
    assert code == 0 and _summary(capsys.readouterr().out)["d1"] == (61.54, 50.00, 80.00)


def test_cli_missing_file_exit_2_without_traceback(files):
    p = _run(files / "nope.csv", "--labels", files / "labels.csv", "--thresholds", files / "thresholds.csv")
    assert p.returncode == 2
    assert "nope.csv: file not found" in p.stderr
    assert "Traceback" not in p.stderr and p.stdout == ""


@pytest.mark.parametrize("problem", ["missing_column", "bad_numbers", "unknown_dataset", "no_thresholds"])
def test_cli_bad_input_exit_2(files, problem, caplog, capsys):
    """In-process (the subprocess test above covers the process boundary): message and status 2."""
    args = [str(files / "submission.csv"), "--labels", str(files / "labels.csv"),
            "--thresholds", str(files / "thresholds.csv")]
    if problem == "missing_column":
        text = (files / "submission.csv").read_text().replace("translation_vector", "translation")
        (files / "submission.csv").write_text(text)
        expect = "submission.csv: missing column(s) translation_vector"
    elif problem == "bad_numbers":
        lines = (files / "labels.csv").read_text().splitlines()
        cells = lines[3].split(",")
        cells[4] = "1;2;3"
        lines[3] = ",".join(cells)
        (files / "labels.csv").write_text("\n".join(lines) + "\n")
        expect = "labels.csv:4: column rotation_matrix needs 9 numbers, got 3"
    elif problem == "unknown_dataset":
        args += ["--dataset", "d9"]
        expect = "dataset 'd9' is not in"
    else:
        write_thresholds({"d1": {"A": TH}, "d2": {"X": TH}}, files / "thresholds.csv")
        expect = "no thresholds for scene d1/B"
    assert cli(args) == 2
    assert expect in caplog.text
    assert capsys.readouterr().out == ""
