"""Write the diagnostics report of a scored submission: tables, camera plots, pipeline views, index.html.

Layout under ``out_dir`` (names made file-system safe)::

    index.html  summary.csv
    <dataset>/confusion.csv  confusion.html  scenes.csv
    <dataset>/<scene>/registration.csv  registration.html  cameras.png
    <dataset>/pairs.csv  pair_graph.png  clusters/<cluster>.png     (with pipeline views)
    <dataset>/scene3d.html    the dataset's interactive 3D view, full page (also inline in index.html)
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from memposer.data.imc import PoseRecord, read_poses, read_thresholds
from memposer.evaluate import POSE_COLUMNS, InputError, check_csv
from memposer.geometry import camera_center
from memposer.metric import Result, default_conf, score_submission
from memposer.report import html as H
from memposer.report import plots, scene3d, tables

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


class _Names:
    """File-system safe, unique names per folder."""

    def __init__(self):
        self.used: Dict[Tuple[str, str], str] = {}
        self.taken: Dict[str, set] = {}

    def __call__(self, parent: str, name: str) -> str:
        key = (parent, name)
        if key not in self.used:
            base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "unnamed"
            slug, k = base, 1
            while slug.lower() in self.taken.setdefault(parent, set()):
                k += 1
                slug = f"{base}_{k}"
            self.taken[parent].add(slug.lower())
            self.used[key] = slug
        return self.used[key]


def _load(labels, thresholds, submission):
    nums = {"rotation_matrix": 9, "translation_vector": 3}
    if isinstance(labels, (str, Path)):
        check_csv(Path(labels), POSE_COLUMNS, nums)
        labels = read_poses(labels)
    if isinstance(submission, (str, Path)):
        check_csv(Path(submission), POSE_COLUMNS, nums)
        submission = read_poses(submission)
    if isinstance(thresholds, (str, Path)):
        check_csv(Path(thresholds), ("dataset", "scene", "thresholds"), {"thresholds": 1})
        thresholds = read_thresholds(thresholds)
    return list(labels), thresholds, list(submission)


def write_report(labels: Union[PathLike, Sequence[PoseRecord]], thresholds: Union[PathLike, dict],
                 submission: Union[PathLike, Sequence[PoseRecord]], out_dir: PathLike,
                 views: Optional[dict] = None, *, result: Optional[Result] = None, conf: Optional[dict] = None,
                 datasets: Optional[Sequence[str]] = None, progress: bool = True) -> Path:
    """Score ``submission`` (unless ``result`` is given) and write the report; returns ``index.html``.

    Args:
        labels, thresholds, submission: file paths, or already read records / ``{dataset: {scene: [th]}}``.
        views: per dataset, from the pipeline: ``{"image_dir": str, "shortlisted": [[a, b], ...],
            "verified": [[a, b, n_inliers], ...], "clusters": {cluster: [images]}}`` (optional
            ``"outliers": [images]``): adds the pair graph and a thumbnail grid per cluster.
        datasets: report these only; default: the datasets of ``views`` when given, else every
            labelled dataset (one missing from the submission then scores 0, as in the metric).
        conf: metric options (:data:`memposer.metric.default_conf`).
    Raises:
        memposer.evaluate.InputError: a missing or malformed input file.
    """
    t0 = time.perf_counter()
    labels, thresholds, submission = _load(labels, thresholds, submission)
    conf = {**default_conf, **(conf or {})}
    labelled = list(dict.fromkeys(r.dataset for r in labels))
    keep = list(datasets) if datasets is not None else ([d for d in labelled if d in views] if views else labelled)
    unknown = [d for d in keep if d not in labelled]
    if unknown:
        log.warning("report: datasets %s have no labels; skipped", unknown)
    keep = [d for d in keep if d in labelled]
    labels = [r for r in labels if r.dataset in keep]
    if result is None:
        try:
            result = score_submission(labels, submission, thresholds, conf)
        except ValueError as e:
            raise InputError(str(e)) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = _Names()
    sections = []
    todo = [(d, s) for d in keep for s in result.datasets[d].scenes]
    bar = tqdm(total=len(todo), desc="report", unit="scene", disable=not progress or len(todo) < 8)
    for ds in keep:
        sections.append(_dataset(out, ds, labels, submission, result, (views or {}).get(ds), names, conf, bar))
    bar.close()
    tables.write_csv(out / "summary.csv", ["dataset", "score", "mAA", "clusterness"],
                     [[d, result.datasets[d].score, result.datasets[d].mAA, result.datasets[d].clusterness]
                      for d in keep])
    index = out / "index.html"
    index.write_text(H.page("memposer report", _summary_html(result, keep, names) + "\n".join(sections)
                            + scene3d.script()))
    log.info("report: %s (%d datasets, %d scenes, %.1f s)", index, len(keep), len(todo), time.perf_counter() - t0)
    return index


def _summary_html(result: Result, keep: List[str], names: _Names) -> str:
    rows = [[d, H.pct(result.datasets[d].score), H.pct(result.datasets[d].mAA), H.pct(result.datasets[d].clusterness),
             len(result.datasets[d].scenes)] for d in keep]
    mean = lambda k: float(np.mean([getattr(result.datasets[d], k) for d in keep])) if keep else 0.0  # noqa: E731
    rows.append(["final (mean over datasets)", H.pct(mean("score")), H.pct(mean("mAA")), H.pct(mean("clusterness")),
                 sum(r[4] for r in rows)])
    links = " · ".join(f'<a href="#{H.href(names("", d))}">{H.esc(d)}</a>' for d in keep)
    return (f"<h1>memposer report</h1>\n<p class=\"muted\">{time.strftime('%Y-%m-%d %H:%M:%S')} · "
            f'scores in percent · <a href="summary.csv">summary.csv</a></p>\n'
            + H.table(["dataset", "score", "mAA", "clusterness", "scenes"], rows) + f"\n<p>{links}</p>\n")


def _dataset(out: Path, ds: str, labels, submission, result: Result, view: Optional[dict], names: _Names,
             conf: dict, bar) -> str:
    slug = names("", ds)
    d_dir = out / slug
    d = result.datasets[ds]
    parts = [f'<h2 id="{H.esc(slug)}">{H.esc(ds)}</h2>',
             f"<p>score <b>{H.pct(d.score)}</b> · mAA {H.pct(d.mAA)} · clusterness {H.pct(d.clusterness)}</p>"]
    # cluster confusion
    scenes, clusters, M = tables.confusion(labels, submission, ds)
    tables.write_csv(d_dir / "confusion.csv", ["true scene \\ cluster", *clusters], M.tolist(), row_names=scenes)
    assoc = {(sc, result.scenes[(ds, sc)].cluster) for sc in d.scenes}
    cell = lambda i, j, v: "" if j == 0 else ("assoc" if (scenes[i], clusters[j - 1]) in assoc else  # noqa: E731
                                             ("zero" if v == 0 else ""))
    conf_html = H.table(["true scene \\ cluster", *clusters], [[s, *row] for s, row in zip(scenes, M.tolist())], cell)
    (d_dir / "confusion.html").write_text(H.page(f"{ds}: clusters", f"<h1>{H.esc(ds)}: true scenes × predicted clusters</h1>"
                                                 + conf_html))
    parts += [f'<h3>Clusters</h3><p class="muted">images per true scene (rows) and predicted cluster (columns); '
              f'blue: the cluster each scene is associated with · <a href="{H.href(slug)}/confusion.csv">csv</a></p>',
              conf_html]
    # scenes
    header, rows = tables.scene_summary(result, ds, conf["skip_top_thresholds"], conf["to_dec"])
    tables.write_csv(d_dir / "scenes.csv", header, rows)
    sub = {}
    for r in submission:
        if r.dataset == ds:
            sub.setdefault(r.image, r)
    has_pose = {im: r.has_pose for im, r in sub.items()}
    scene_parts = []
    links = []
    for sc in d.scenes:
        s_slug = names(slug, sc)
        rel = f"{slug}/{s_slug}"
        scene_parts.append(_scene(out / slug / s_slug, rel, ds, sc, labels, sub, has_pose, result, conf))
        links.append(f'<a href="{H.href(rel)}/registration.html">{H.esc(sc)}</a>')
        bar.update()
    rows_html = [[*r[:-1], f"{100 * r[-1]:.2f}"] for r in rows]
    parts += [f'<h3>Scenes</h3><p class="muted">registered: cameras within each threshold after the best alignment '
              f'for that threshold; counted: sum over scored thresholds of max(0, registered - {conf["to_dec"]}); '
              f'mAA in percent · <a href="{H.href(slug)}/scenes.csv">csv</a> · tables: {" · ".join(links)}</p>',
              H.table([h.replace("registered@", "reg@") for h in header], rows_html), *scene_parts]
    parts.append(_scene3d(d_dir, slug, ds, labels, submission, result, view))
    if view:
        parts.append(_views(d_dir, slug, ds, labels, view, names))
    return "\n".join(parts)


def _scene3d(d_dir: Path, slug: str, ds: str, labels, submission, result: Result, view: Optional[dict]) -> str:
    """The 3D view inline, and as its own full-window page ``<dataset>/scene3d.html``."""
    data = scene3d.dataset_scene(ds, labels, submission, result, view)
    d_dir.mkdir(parents=True, exist_ok=True)
    (d_dir / "scene3d.html").write_text(H.page(
        f"{ds}: 3D view", '<p><a href="../index.html">← report</a></p>'
        + scene3d.section_html(data, "scene3d", height=720) + scene3d.script()))
    return (f'<h3>3D view</h3><p class="muted">predicted cameras and sparse points per cluster, true cameras aligned '
            f'by the metric · <a href="{H.href(slug)}/scene3d.html">full page</a></p>'
            + scene3d.section_html(data, f"scene3d-{slug}"))


def _scene(s_dir: Path, rel: str, ds: str, sc: str, labels, sub: Dict[str, PoseRecord], has_pose, result: Result,
           conf: dict) -> str:
    res = result.scenes[(ds, sc)]
    ths = list(result.thresholds[ds][sc])
    skip = conf["skip_top_thresholds"]
    header, rows = tables.registration_table(result, ds, sc, has_pose)
    tables.write_csv(s_dir / "registration.csv", header, rows)
    n_th = len(ths)
    pass_cols = range(4, 4 + n_th)
    cell = lambda i, j, v: ("pass" if v else "fail") if j in pass_cols else ""  # noqa: E731
    hcls = lambda j, h: "name" if j < 2 else ("skip" if j in pass_cols and j - 4 < skip else "")  # noqa: E731
    reg_html = H.table(header, rows, cell, hcls, name_cols=2)
    q = int(np.argmax(ths)) if ths else 0
    reg = res.registration
    al = reg.alignment(q) if reg is not None else None
    info = (f"cluster <b>{H.esc(res.cluster or '-')}</b> · {res.n_shared} of {res.n_images} images shared · "
            f"cluster size {res.cluster_size} · mAA {H.pct(res.mAA)} · thresholds {', '.join(f'{t:g}' for t in ths)} "
            f"(the {skip} smallest not scored) · "
            + (f"alignment at {ths[q]:g}: scale {al.s:.4g}, {int(reg.n_inliers[q])} inliers" if al else
               "no alignment found"))
    (s_dir / "registration.html").write_text(H.page(
        f"{ds} / {sc}: registration",
        f'<p><a href="{"../" * (rel.count("/") + 1)}index.html">← report</a></p>'
        f"<h1>{H.esc(ds)} / {H.esc(sc)}</h1><p>{info}</p>"
        f'<p class="muted">error: distance to the truth after the best alignment at the largest threshold '
        f'(blank: not registered); pass@th uses the best alignment for th · <a href="registration.csv">csv</a></p>'
        f'<img src="cameras.png" alt="cameras">' + reg_html))
    _camera_plot(s_dir / "cameras.png", ds, sc, labels, sub, result, q, skip, al)
    return (f'<h4>{H.esc(sc)}</h4><p class="muted">{info} · <a href="{H.href(rel)}/registration.html">'
            f'registration table</a> (<a href="{H.href(rel)}/registration.csv">csv</a>)</p>'
            f'<img src="{H.href(rel)}/cameras.png" alt="cameras of {H.esc(sc)}">')


def _camera_plot(path: Path, ds: str, sc: str, labels, sub: Dict[str, PoseRecord], result: Result, q: int,
                 skip: int, al) -> Path:
    gt = [r for r in labels if r.dataset == ds and r.scene == sc and r.has_pose]
    index = {r.image: i for i, r in enumerate(gt)}
    R_gt = np.stack([r.R for r in gt]) if gt else np.zeros((0, 3, 3))
    C_gt = np.stack([camera_center(r.R, r.t) for r in gt]) if gt else np.zeros((0, 3))
    res = result.scenes[(ds, sc)]
    rows = {r.image: r for r in result.table if r.dataset == ds and r.scene == sc}
    pred = [im for im in res.images if im in sub and sub[im].has_pose and im in index] if al else []
    if pred:
        R_p, t_p = al.poses(np.stack([sub[im].R for im in pred]), np.stack([sub[im].t for im in pred]))
        C_p = camera_center(R_p, t_p)
    else:
        R_p, C_p = np.zeros((0, 3, 3)), np.zeros((0, 3))
    n_passed = np.array([sum(rows[im].passed[skip:]) for im in pred], int)
    fitted = np.array([rows[im].used_for_alignment for im in pred], bool)
    n_th = len(result.thresholds[ds][sc])
    title = (f"{ds} / {sc} → cluster {res.cluster or '-'}: {len(pred)} aligned predictions, {len(gt)} true cameras, "
             f"mAA {100 * res.mAA:.1f}%" + ("" if al else " | no alignment found"))
    return plots.plot_cameras(path, R_gt, C_gt, R_p, C_p, np.array([index[im] for im in pred], int), n_passed,
                              n_th - skip, fitted, title, max(result.thresholds[ds][sc]) if n_th else None)


def _views(d_dir: Path, slug: str, ds: str, labels, view: dict, names: _Names) -> str:
    truth = {r.image: r.scene for r in labels if r.dataset == ds}
    colors = plots.scene_colors(list(dict.fromkeys(truth.values())))
    header, rows = tables.pair_table(view, truth)
    tables.write_csv(d_dir / "pairs.csv", header, rows)
    counts = tables.pair_counts(rows)
    clusters = dict(view.get("clusters") or {})
    if view.get("outliers"):
        clusters["(not in any cluster)"] = list(view["outliers"])
    images = list(dict.fromkeys([*truth, *(n for c in clusters.values() for n in c),
                                 *(n for r in rows for n in r[:2])]))
    plots.plot_pair_graph(d_dir / "pair_graph.png", images, truth, rows, colors,
                          f"{ds}: {counts['shortlisted']} shortlisted pairs, {counts['verified']} verified "
                          f"({counts['verified'] - counts['verified_same_scene']} across true scenes)")
    prec = lambda a, b: f"{100 * a / b:.1f}%" if b else "-"  # noqa: E731
    parts = ["<h3>Pipeline views</h3>",
             f"<p>shortlisted pairs {counts['shortlisted']} (same true scene: {prec(counts['shortlisted_same_scene'], counts['shortlisted'])}) · "
             f"verified {counts['verified']} (same true scene: {prec(counts['verified_same_scene'], counts['verified'])}) · "
             f'<a href="{H.href(slug)}/pairs.csv">pairs.csv</a></p>',
             f'<img src="{H.href(slug)}/pair_graph.png" alt="pair graph of {H.esc(ds)}">']
    image_dir = Path(view["image_dir"]) if view.get("image_dir") else None
    for c, members in clusters.items():
        c_slug = names(f"{slug}/clusters", c)
        plots.plot_thumbnails(d_dir / "clusters" / f"{c_slug}.png", image_dir, list(members), truth, colors,
                              f"{ds} / {c}")
        parts.append(f'<img src="{H.href(slug)}/clusters/{H.href(c_slug)}.png" alt="cluster {H.esc(c)}">')
    return "\n".join(parts)
