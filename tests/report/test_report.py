"""memposer.report: the numbers in its tables, the files its pages reference, rendering in Chromium."""
import csv
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from memposer import geometry as geo
from memposer.data.imc import OUTLIER_SCENE, PoseRecord, read_poses, read_thresholds, write_poses, write_thresholds
from memposer.report import write_report
from memposer.report.plots import view_frame

TH = [0.05, 0.1, 0.2, 0.5, 1.0]
D1, D2 = "d 1", "d2"  # a space in a dataset name, a slash in a scene name: paths must stay safe
B = "B/2"


def _make(root: Path):
    """D1: scenes A (5) and B/2 (5) + 2 outliers; cluster c1 = A + 2 of B/2, c2 = 3 of B/2 -> mAA 50, clusterness 80.
    D2: scene X (6), exact poses moved by a similarity, x5 without a pose -> mAA 2/3, clusterness 1."""
    rng = np.random.default_rng(0)
    labels, sub = [], []
    for sc, m in (("A", 5), (B, 5), (OUTLIER_SCENE, 2)):
        for i in range(m):
            R = geo.random_rotation(rng)
            t = geo.t_from_center(R, rng.normal(size=3) * 3)
            im = f"{sc[0]}{i}.png"
            labels.append(PoseRecord(D1, sc, im, R, t))
            cluster = "c1" if sc == "A" or (sc == B and i < 2) else ("c2" if sc == B else OUTLIER_SCENE)
            sub.append(PoseRecord(D1, cluster, im, R, t))
    s, Rs, ts = 3.0, geo.random_rotation(rng), rng.normal(size=3)
    for i in range(6):
        R = geo.look_at(rng.normal(size=3) * 3 + [0, 0, 5], np.zeros(3), up=np.array([0.0, 0, 1]))[0]
        t = geo.t_from_center(R, rng.normal(size=3) * 3)
        labels.append(PoseRecord(D2, "X", f"x{i}.jpg", R, t))
        Rp, tp = geo.apply_similarity(R, t, s, Rs, ts)
        sub.append(PoseRecord(D2, "k", f"x{i}.jpg", *((None, None) if i == 5 else (Rp, tp))))
    write_poses(labels, root / "labels.csv")
    write_poses(sub, root / "submission.csv")
    write_thresholds({D1: {"A": TH, B: TH}, D2: {"X": TH}}, root / "thresholds.csv")
    img_dir = root / "images"
    img_dir.mkdir()
    for k, r in enumerate(labels):
        if r.dataset == D1 and r.image != "A4.png":  # A4.png missing on disk: a placeholder, no crash
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(img_dir / r.image)
    views = {D1: {"image_dir": str(img_dir),
                  "shortlisted": [["A0.png", "A1.png"], ["A0.png", "A2.png"], ["A1.png", "B0.png"], ["B3.png", "B4.png"],
                                  ["A3.png", "o0.png"]],
                  "verified": [["A0.png", "A1.png", 250], ["A1.png", "B0.png", 40], ["B3.png", "B4.png", 90]],
                  "clusters": {"c1": ["A0.png", "A1.png", "A2.png", "A3.png", "A4.png", "B0.png", "B1.png"],
                               "c2": ["B2.png", "B3.png", "B4.png"]},
                  "outliers": ["o0.png", "o1.png"],
                  "points": {"c1": (rng.normal(size=(300, 3)) * 2).tolist()}}}
    return views


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    views = _make(root)
    index = write_report(root / "labels.csv", root / "thresholds.csv", root / "submission.csv", root / "out",
                         views, datasets=[D1, D2], progress=False)
    return root, index, views


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_summary_and_scene_tables(report):
    root, index, _ = report
    out = index.parent
    assert index == root / "out" / "index.html"
    summary = {r[0]: [float(v) for v in r[1:]] for r in _csv(out / "summary.csv")[1:]}
    assert summary[D1] == pytest.approx([2 * 0.5 * 0.8 / 1.3, 0.5, 0.8], abs=1e-9)
    assert summary[D2] == pytest.approx([0.8, 2 / 3, 1.0], abs=1e-9)
    scenes = _csv(out / "d_1" / "scenes.csv")
    assert scenes[0] == ["scene", "images", "cluster", "shared", "cluster_size", *(f"registered@{t:g}" for t in TH),
                         "counted", "possible", "mAA"]
    rows = {r[0]: r[1:] for r in scenes[1:]}
    # A: all 5 in c1 (size 7), exact poses: 5 registered everywhere, 3 x (5 - 3) counted
    assert rows["A"] == ["5", "c1", "5", "7", "5", "5", "5", "5", "5", "6", "6", "1"]
    # B/2: 3 shared with c2, exact: 3 registered, nothing counted
    assert rows[B] == ["5", "c2", "3", "3", "3", "3", "3", "3", "3", "0", "6", "0"]
    html = index.read_text()
    for text in ("61.54", "50.00", "80.00", "66.67", "70.77"):  # percentages in the summary table
        assert f">{text}<" in html


def test_confusion_table(report):
    out = report[1].parent
    rows = _csv(out / "d_1" / "confusion.csv")
    assert rows[0] == ["true scene \\ cluster", "c1", "c2", OUTLIER_SCENE]
    assert rows[1:] == [["A", "5", "0", "0"], [B, "2", "3", "0"], [OUTLIER_SCENE, "0", "0", "2"]]
    html = (out / "d_1" / "confusion.html").read_text()
    assert html.count('class="assoc"') == 2  # A -> c1 and B/2 -> c2 highlighted
    assert re.search(r'<td class="assoc">5</td>', html) and re.search(r'<td class="assoc">3</td>', html)


def test_registration_table(report):
    out = report[1].parent
    rows = _csv(out / "d2" / "X" / "registration.csv")
    assert rows[0] == ["image", "cluster", "has_pose", "error", *(f"pass@{t:g}" for t in TH), "n_passed",
                       "used_for_alignment", "in_triplet"]
    body = {r[0]: r[1:] for r in rows[1:]}
    assert sorted(body) == [f"x{i}.jpg" for i in range(6)]
    assert body["x5.jpg"] == ["k", "0", "", "0", "0", "0", "0", "0", "0", "0", "0"]
    for i in range(5):
        cluster, has_pose, err, *passed, n, used, _ = body[f"x{i}.jpg"]
        assert (cluster, has_pose, passed, n, used) == ("k", "1", ["1"] * 5, "5", "1")
        assert float(err) < 1e-9
    assert sum(int(r[-1]) for r in body.values()) == 3  # the minimal triplet
    # a labelled image with no submission row would show as '(no row)'; a B/2 image in c1 shows its cluster
    b = {r[0]: r[1] for r in _csv(out / "d_1" / "B_2" / "registration.csv")[1:]}
    assert b == {"B0.png": "c1", "B1.png": "c1", "B2.png": "c2", "B3.png": "c2", "B4.png": "c2"}


def test_camera_plots_and_pngs(report):
    out = report[1].parent
    for p in [out / "d_1" / "A" / "cameras.png", out / "d_1" / "B_2" / "cameras.png", out / "d2" / "X" / "cameras.png",
              out / "d_1" / "pair_graph.png", out / "d_1" / "clusters" / "c1.png"]:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width >= 600 and im.height >= 150
            assert np.asarray(im.convert("L")).std() > 5  # something was drawn


def test_view_frame_finds_up():
    rng = np.random.default_rng(0)
    up = geo.random_rotation(rng)[:, 2]
    world = np.stack([np.cross(up, [1.0, 0, 0]), np.zeros(3), up])
    world[0] /= np.linalg.norm(world[0])
    world[1] = np.cross(up, world[0])
    C = rng.normal(size=(20, 3)) * [10, 3, 0.5] @ world  # spread most along world[0], little along up
    R = np.stack([geo.look_at(c, c + world[0] * 5 + rng.normal(size=3) * 0.5, up=up)[0] for c in C])
    F = view_frame(R, C)
    np.testing.assert_allclose(F @ F.T, np.eye(3), atol=1e-12)
    assert F[2] @ up > 0.99 and abs(F[0] @ world[0]) > 0.95


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src, self.href = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.src.append(a["src"])
        if tag == "a" and not a.get("href", "").startswith("#"):
            self.href.append(a["href"])


def _refs(path: Path):
    p = _Refs()
    p.feed(path.read_text())
    return p


def test_pages_reference_every_file_they_need(report):
    root, index, _ = report
    out = index.parent
    refs = _refs(index)
    for r in refs.src + refs.href:
        assert not re.match(r"^[a-z]+:", r) and not r.startswith("/"), f"non-relative reference {r}"
        assert (out / unquote(r)).is_file(), f"index.html references missing {r}"
    needed = {f"{d}/{s}/cameras.png" for d, s in (("d_1", "A"), ("d_1", "B_2"), ("d2", "X"))} | \
             {"d_1/pair_graph.png", "d_1/clusters/c1.png", "d_1/clusters/c2.png", "d_1/clusters/not_in_any_cluster.png"}
    assert needed <= {unquote(s) for s in refs.src}
    pages = {unquote(h) for h in refs.href if h.endswith(".html")}
    assert {"d_1/A/registration.html", "d_1/B_2/registration.html", "d2/X/registration.html"} <= pages
    for page in pages:  # every linked page: its own references resolve too
        sub = _refs(out / page)
        for r in sub.src + sub.href:
            assert ((out / page).parent / unquote(r)).resolve().is_file(), f"{page} references missing {r}"
    assert not (out / "d2" / "pair_graph.png").exists()  # no views for d2: no pipeline figures


def test_pair_table_counts(report):
    out = report[1].parent
    rows = _csv(out / "d_1" / "pairs.csv")
    assert rows[0] == ["image_a", "image_b", "scene_a", "scene_b", "same_scene", "shortlisted", "verified", "inliers"]
    body = {(r[0], r[1]): r[2:] for r in rows[1:]}
    assert len(body) == 5
    assert body[("A1.png", "B0.png")] == ["A", B, "0", "1", "1", "40"]  # a false pair that passed verification
    assert body[("A3.png", "o0.png")] == ["A", OUTLIER_SCENE, "0", "1", "0", "0"]
    html = report[1].read_text()
    assert "shortlisted pairs 5 (same true scene: 60.0%)" in html
    assert "verified 3 (same true scene: 66.7%)" in html


def test_api_takes_records_and_a_result(tmp_path, report):
    """The pipeline passes what it has: records, thresholds and a precomputed Result."""
    from memposer.metric import score_submission
    root = report[0]
    labels, ths, sub = read_poses(root / "labels.csv"), read_thresholds(root / "thresholds.csv"), \
        read_poses(root / "submission.csv")
    labels = [r for r in labels if r.dataset == D2]
    res = score_submission(labels, sub, ths)
    index = write_report(labels, ths, sub, tmp_path / "r", result=res, progress=False)
    summary = _csv(tmp_path / "r" / "summary.csv")
    assert [r[0] for r in summary[1:]] == [D2] and float(summary[1][2]) == pytest.approx(2 / 3, abs=1e-9)
    assert (tmp_path / "r" / "d2" / "X" / "cameras.png").is_file() and index.is_file()
    # views restrict the report to the datasets that ran
    index = write_report(root / "labels.csv", ths, sub, tmp_path / "v", {D2: {"clusters": {"k": ["x0.jpg"]}}},
                         progress=False)
    assert [r[0] for r in _csv(tmp_path / "v" / "summary.csv")[1:]] == [D2]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "memposer.report", *map(str, args)], capture_output=True, text=True,
                          timeout=180)


def test_cli_end_to_end_and_bad_input(report, tmp_path):
    root = report[0]
    (tmp_path / "views.json").write_text(json.dumps(report[2]))
    p = _run(root / "submission.csv", "--labels", root / "labels.csv", "--thresholds", root / "thresholds.csv",
             "--out", tmp_path / "cli", "--views", tmp_path / "views.json", "--quiet")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"report: {tmp_path / 'cli' / 'index.html'}"
    # --views given: only its datasets
    assert [r[0] for r in _csv(tmp_path / "cli" / "summary.csv")[1:]] == [D1]
    assert _csv(tmp_path / "cli" / "d_1" / "confusion.csv") == _csv(report[1].parent / "d_1" / "confusion.csv")
    p = _run(root / "missing.csv", "--labels", root / "labels.csv", "--thresholds", root / "thresholds.csv",
             "--out", tmp_path / "bad")
    assert p.returncode == 2 and "missing.csv: file not found" in p.stderr and "Traceback" not in p.stderr


PROBE = """<script>
window.addEventListener("load", () => {
  const drawn = [...document.querySelectorAll("canvas.mp3d")].map(c => {
    const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < px.length; i += 4) if (px[i] < 250 || px[i + 1] < 250 || px[i + 2] < 250) n++;
    return n;
  });
  document.body.setAttribute("data-canvas", drawn.join(","));
  const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute("src"));
  document.body.setAttribute("data-images", String(document.images.length));
  document.body.setAttribute("data-broken", bad.join("|"));
  if (bad.length) console.error("broken images: " + bad.join(", "));
});
</script>"""


def test_index_renders_in_headless_chromium(report):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    out = report[1].parent
    # the report has no scripts; a probe page beside it (same relative paths) checks every image decoded
    probe = out / "_probe.html"
    probe.write_text(report[1].read_text().replace("</body>", PROBE + "</body>"))
    try:
        p = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                            "--v=0", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                           capture_output=True, text=True, timeout=120)
    finally:
        probe.unlink()
    assert p.returncode == 0, p.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", p.stdout)
    assert body, p.stdout[:500]
    n_images = int(re.search(r'data-images="(\d+)"', body.group(1)).group(1))
    assert n_images == 7  # 3 camera plots, the pair graph, 3 thumbnail grids
    assert 'data-broken=""' in body.group(1), body.group(1)
    drawn = [int(n) for n in re.search(r'data-canvas="([\d,]*)"', body.group(1)).group(1).split(",")]
    assert len(drawn) == 2 and min(drawn) > 300, drawn  # one 3D view per dataset, each with frustums drawn
    console = [ln for ln in p.stderr.splitlines() if "CONSOLE" in ln]
    assert not console, console
    assert "memposer report" in p.stdout and "61.54" in p.stdout


def _scene_json(page: Path) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="[^"]+">(.*?)</script>', page.read_text(),
                                re.S).group(1))


def test_scene3d_aligns_clusters_with_the_metric(report):
    """d2's cluster k (exact poses moved by a similarity) drawn in its scene's frame through the metric's
    alignment: every predicted frustum lies on a true one; d 1's c1 carries the pipeline's points."""
    out = report[1].parent
    d2 = _scene_json(out / "d2" / "scene3d.html")
    (k,) = d2["groups"]
    assert (k["name"], k["scene"], k["cameras"]) == ("k", "X", 5)
    pred, gt = np.array(k["frustums"]), np.array(k["gt"])
    assert pred.shape == (5, 15) and gt.shape == (6, 15)
    assert np.abs(pred[:, None] - gt[None]).max(-1).min(1).max() < 2e-3  # to the JSON's rounding
    assert np.ptp(gt[:, :3], axis=0).max() > 0.5  # not all cameras on one spot
    d1 = {g["name"]: g for g in _scene_json(out / "d_1" / "scene3d.html")["groups"]}
    assert sorted(d1) == ["c1", "c2"] and d1["c1"]["scene"] == "A" and d1["c2"]["scene"] == B
    assert 250 < d1["c1"]["n_points"] <= 300 and len(d1["c1"]["points"]) == 3 * d1["c1"]["n_points"]
    assert d1["c2"]["points"] == [] and len(d1["c2"]["frustums"]) == 3
    index = report[1].read_text()
    assert index.count('<canvas class="mp3d" data-src="scene3d-') == 2 and index.count("use strict") == 1  # the viewer inlined once
    assert not re.search(r"(src|href)=\"(https?:)?//", index)  # nothing from the network


def test_snapshot_of_the_3d_view(report, tmp_path):
    """``python -m memposer.report.snapshot`` (the README picture's command): a small PNG with d2's
    frustums in cluster k's colour on the white canvas."""
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    out = report[1].parent
    p = subprocess.run([sys.executable, "-m", "memposer.report.snapshot", str(out), str(tmp_path / "v.png"),
                        "--dataset", "d2", "--width", "640", "--height", "560"], capture_output=True, text=True,
                       timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    with Image.open(tmp_path / "v.png") as im:
        assert im.size == (640, 560)
        px = np.asarray(im.convert("RGB")).reshape(-1, 3).astype(int)
    blue = np.abs(px - [0x1F, 0x77, 0xB4]).max(1) < 40  # tab10's first colour: cluster k
    assert blue.sum() > 100, blue.sum()
    assert (tmp_path / "v.png").stat().st_size < 300_000
    p = subprocess.run([sys.executable, "-m", "memposer.report.snapshot", str(tmp_path), str(tmp_path / "w.png")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "no */scene3d.html" in p.stderr and "Traceback" not in p.stderr


def test_confusion_missing_foreign_and_duplicate_rows():
    from memposer.report.tables import NO_ROW, NOT_LABELLED, confusion
    labels = [PoseRecord("d", s, f"{s}{i}") for s, m in (("A", 3), ("B", 2)) for i in range(m)]
    sub = [PoseRecord("d", "k", "A0"), PoseRecord("d", "k", "A1"), PoseRecord("d", "j", "A1"),  # duplicate: first kept
           PoseRecord("d", "j", "B0"), PoseRecord("d", "j", "zz"), PoseRecord("e", "k", "B1")]  # foreign; other dataset
    scenes, clusters, M = confusion(labels, sub, "d")
    assert scenes == ["A", "B", NOT_LABELLED] and clusters == ["k", "j", NO_ROW]
    assert M.tolist() == [[2, 0, 1], [0, 1, 1], [0, 1, 0]]
