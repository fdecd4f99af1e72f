"""The report's interactive 3D view of a dataset: every predicted cluster's cameras (frustums, in the
cluster's colour) and sparse points, with the ground-truth cameras (dark grey) where labels exist.

A cluster the metric associated with a true scene is drawn in that scene's frame, through the
metric's own alignment (the one behind its mAA, at the largest threshold), so predicted and true
frustums overlap where the pose is right. Clusters are laid out side by side, each centred and
scaled to a common size, z up. Rendering is ``scene3d.js``: canvas 2D, inlined into the page, no
network and no library.
"""
from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from memposer.data.imc import OUTLIER_SCENE, PoseRecord
from memposer.geometry import camera_center
from memposer.metric import Result
from memposer.report.plots import scene_colors, view_frame

FRUSTUM = 0.25  # frustum depth, in units of a cluster's camera spread
SPACING = 3.5  # between cluster centres, same units
MAX_RADIUS = 4.0  # points farther from the cluster centre are not drawn
_CORNERS = np.array([[-0.5, -0.375, 1.0], [0.5, -0.375, 1.0], [0.5, 0.375, 1.0], [-0.5, 0.375, 1.0]])


def _frustums(R: np.ndarray, C: np.ndarray) -> List[List[float]]:
    """Per camera: its centre and 4 image-plane corners, world coordinates, flattened (15 numbers)."""
    out = []
    for Ri, Ci in zip(R, C):
        corners = Ci + FRUSTUM * _CORNERS @ Ri  # R^T x for each corner x (camera -> world)
        out.append(np.round(np.concatenate([Ci, corners.ravel()]), 3).tolist())
    return out


def _natural(name: str) -> list:
    """Sort key: cluster2 before cluster10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _associated_scene(result: Result, ds: str, cluster: str) -> Optional[str]:
    """The true scene whose mAA the metric computed on ``cluster`` (most shared images), if aligned."""
    cands = [s for (d, _), s in result.scenes.items() if d == ds and s.cluster == cluster and s.alignment is not None]
    return max(cands, key=lambda s: s.n_shared).scene if cands else None


def dataset_scene(ds: str, labels: Sequence[PoseRecord], submission: Sequence[PoseRecord], result: Result,
                  view: Optional[dict] = None) -> dict:
    """The JSON the viewer draws for dataset ``ds``: one group per predicted cluster with a pose.

    ``view["points"]`` (from the pipeline, optional): cluster -> ``[[x, y, z], ...]`` in the cluster's frame.
    """
    rows: Dict[str, List[PoseRecord]] = {}
    seen = set()
    for r in submission:
        if r.dataset == ds and r.scene != OUTLIER_SCENE and r.has_pose and r.image not in seen:
            seen.add(r.image)
            rows.setdefault(r.scene, []).append(r)
    rows = dict(sorted(rows.items(), key=lambda kv: _natural(kv[0])))
    colors = scene_colors(list(rows))
    points = (view or {}).get("points") or {}
    ncol = int(np.ceil(np.sqrt(len(rows)))) or 1
    groups = []
    for k, (cluster, recs) in enumerate(rows.items()):
        R = np.stack([np.asarray(r.R, np.float64) for r in recs])
        t = np.stack([np.asarray(r.t, np.float64) for r in recs])
        X = np.asarray(points.get(cluster) or np.zeros((0, 3)), np.float64).reshape(-1, 3)
        scene = _associated_scene(result, ds, cluster)
        R_gt, C_gt = np.zeros((0, 3, 3)), np.zeros((0, 3))
        if scene is not None:
            al = result.alignment(ds, scene)
            R, t = al.poses(R, t)
            X = al.points(X)
            gt = [g for g in labels if g.dataset == ds and g.scene == scene and g.has_pose]
            if gt:
                R_gt = np.stack([np.asarray(g.R, np.float64) for g in gt])
                C_gt = np.stack([camera_center(np.asarray(g.R, np.float64), np.asarray(g.t, np.float64)) for g in gt])
        C = camera_center(R, t)
        # a frame with z up, centred on the cameras, in units of their spread
        F = view_frame(R, C)
        c0 = np.median(C, axis=0)
        spread = float(np.median(np.linalg.norm(C - c0, axis=1)))
        if spread < 1e-9:
            spread = float(np.median(np.linalg.norm(X - c0, axis=1))) if len(X) else 1.0
        spread = spread if spread > 1e-9 else 1.0
        offset = SPACING * np.array([k % ncol, 0.0, -(k // ncol)])  # rows below one another: no overlap on screen
        to_view = lambda P: (P - c0) @ F.T / spread + offset  # noqa: E731
        Xv = (X - c0) @ F.T / spread
        Xv = Xv[np.linalg.norm(Xv, axis=1) < MAX_RADIUS] + offset
        groups.append({
            "name": cluster, "color": colors[cluster], "scene": scene, "cameras": len(recs), "n_points": len(Xv),
            "frustums": _frustums(R @ F.T, to_view(C)), "gt": _frustums(R_gt @ F.T, to_view(C_gt)),
            "points": np.round(Xv, 3).ravel().tolist(), "label": (offset + [-1.0, 0.0, 1.6]).tolist()})
    if groups:  # centre the layout on the origin
        shift = SPACING * np.array([(min(ncol, len(groups)) - 1) / 2, 0.0, -((len(groups) - 1) // ncol) / 2])
        for g in groups:
            for key in ("frustums", "gt"):
                g[key] = [(np.asarray(f).reshape(5, 3) - shift).round(3).ravel().tolist() for f in g[key]]
            g["points"] = (np.asarray(g["points"]).reshape(-1, 3) - shift).round(3).ravel().tolist()
            g["label"] = (np.asarray(g["label"]) - shift).tolist()
    return {"dataset": ds, "groups": groups}


def section_html(scene: dict, dom_id: str, height: int = 480) -> str:
    """A canvas bound to the scene's JSON (inline) and a legend; needs :func:`script` once on the page."""
    data = json.dumps(scene, separators=(",", ":")).replace("</", "<\\/")  # no early </script>
    legend = " · ".join(
        f'<span style="color:{g["color"]}"><b>{html.escape(g["name"])}</b></span> {g["cameras"]} cameras, '
        f'{g["n_points"]} points, ' + (f'aligned to true scene <i>{html.escape(g["scene"])}</i>' if g["scene"]
                                       else "own frame (no aligned true scene)")
        for g in scene["groups"]) or "no cluster with a pose"
    return (f'<canvas class="mp3d" data-src="{html.escape(dom_id)}" style="width:100%;height:{height}px"></canvas>\n'
            f'<script type="application/json" id="{html.escape(dom_id)}">{data}</script>\n'
            f'<p class="muted">{legend} · dark grey: true cameras · drag to orbit, wheel to zoom, '
            f"double click to reset</p>")


@lru_cache(maxsize=1)
def _js() -> str:
    return (Path(__file__).with_name("scene3d.js")).read_text()


def script() -> str:
    """The viewer, inline (the report must open offline and inside Kaggle)."""
    return f"<script>\n{_js()}</script>"
