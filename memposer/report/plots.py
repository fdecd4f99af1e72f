"""The report's figures, drawn on matplotlib ``Figure`` objects (Agg canvas; pyplot's global state and
backend are never touched, so this is safe in notebooks, threads and headless machines)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from memposer.data.imc import OUTLIER_SCENE
from memposer.geometry import camera_center

log = logging.getLogger(__name__)

PASS_COLORS = ("#d62728", "#ff7f0e", "#2ca02c")  # no scored threshold passed / some / all


def _save(fig: Figure, path: Path, dpi: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.15)
    return path


def scene_colors(names: Sequence[str]) -> Dict[str, str]:
    """A stable colour per true scene (outliers grey)."""
    from matplotlib import colormaps  # noqa: PLC0415
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    out, k = {}, 0
    for n in names:
        if n == OUTLIER_SCENE:
            out[n] = "#7f7f7f"
        else:
            out[n] = "#%02x%02x%02x" % tuple(int(255 * v) for v in cmap(k % cmap.N)[:3])
            k += 1
    return out


def view_frame(R: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Rows ``e1, e2, up`` of a frame for top/side views of cameras ``R`` (n,3,3) w2c at centres ``C``.

    Up is minus the mean camera y axis (OpenCV y points down) when the cameras agree on it, else the
    direction in which the centres spread least; ``e1`` is the main horizontal spread of the centres.
    """
    if len(C) == 0:
        return np.eye(3)
    down = R[:, 1].mean(0)
    Cc = C - C.mean(0)
    _, _, Vt = np.linalg.svd(Cc, full_matrices=True) if len(C) > 1 else (None, None, np.eye(3))
    if np.linalg.norm(down) > 0.3:
        up = -down / np.linalg.norm(down)
    else:
        up = Vt[2] if Vt[2] @ -down >= 0 else -Vt[2]
    flat = Cc - np.outer(Cc @ up, up)
    _, _, V2 = np.linalg.svd(flat, full_matrices=True) if len(C) > 1 else (None, None, np.eye(3))
    e1 = V2[0] - (V2[0] @ up) * up
    if np.linalg.norm(e1) < 1e-9:  # centres on a vertical line
        e1 = np.cross(up, [1.0, 0, 0]) if abs(up[0]) < 0.9 else np.cross(up, [0, 1.0, 0])
    e1 /= np.linalg.norm(e1)
    return np.stack([e1, np.cross(up, e1), up])


def plot_cameras(path: Path, R_gt: np.ndarray, C_gt: np.ndarray, R_pred: np.ndarray, C_pred: np.ndarray,
                 pred_idx: np.ndarray, n_passed: np.ndarray, n_scored: int, fitted: np.ndarray, title: str,
                 threshold: Optional[float] = None) -> Path:
    """Top and side views of true cameras (black) and aligned predicted cameras (coloured by how many
    scored thresholds they pass), viewing directions as short segments, errors as thin red lines.

    ``R_gt`` (m,3,3) w2c and ``C_gt`` (m,3) for the scene's cameras; ``R_pred, C_pred`` (k,...) the
    predicted cameras already aligned onto the truth, ``pred_idx`` (k,) their rows in the truth,
    ``n_passed`` (k,) scored thresholds passed, ``fitted`` (k,) used for the alignment.
    """
    frame = view_frame(R_gt, C_gt)
    ext = np.ptp(C_gt @ frame.T, axis=0).max() if len(C_gt) > 1 else 1.0
    ext = ext if np.isfinite(ext) and ext > 0 else 1.0
    arrow = 0.06 * ext
    lo = (C_gt @ frame.T).min(0) - 0.15 * ext if len(C_gt) else -np.ones(3)
    hi = (C_gt @ frame.T).max(0) + 0.15 * ext if len(C_gt) else np.ones(3)
    span = hi - lo
    height = float(np.clip(5.5 * max(span[1], span[2]) / span[0], 1.8, 6.0))  # panels 5.5 in wide, equal aspect
    fig = Figure(figsize=(12, height + 1.2))
    axes = fig.subplots(1, 2)
    outside = 0
    for ax, (i, j), name in zip(axes, [(0, 1), (0, 2)], ["top view", "side view"]):
        P = lambda X: X @ frame[[i, j]].T  # noqa: E731
        g, gd = P(C_gt), P(R_gt[:, 2]) if len(R_gt) else np.zeros((0, 2))
        ax.add_collection(LineCollection(np.stack([g, g + arrow * gd], 1), colors="0.35", linewidths=1))
        ax.scatter(g[:, 0], g[:, 1], s=14, c="k", label="ground truth", zorder=3)
        if len(C_pred):
            p, pd = P(C_pred), P(R_pred[:, 2])
            ax.add_collection(LineCollection(np.stack([p, g[pred_idx]], 1), colors="#d62728", linewidths=0.6,
                                             alpha=0.8))
            col = np.where(n_passed == 0, PASS_COLORS[0], np.where(n_passed >= n_scored, PASS_COLORS[2],
                                                                    PASS_COLORS[1]))
            ax.add_collection(LineCollection(np.stack([p, p + arrow * pd], 1), colors=col, linewidths=1.2))
            ax.scatter(p[:, 0], p[:, 1], s=22, c=col, marker="o", edgecolors="none", zorder=4)
            if fitted.any():
                ax.scatter(p[fitted, 0], p[fitted, 1], s=60, facecolors="none", edgecolors="#1f77b4",
                           linewidths=0.8, zorder=5, label="used for the alignment")
            if name == "top view":
                out = (p < lo[[i, j]]) | (p > hi[[i, j]])
                outside = int(out.any(1).sum())
        ax.set_xlim(lo[i], hi[i])
        ax.set_ylim(lo[j], hi[j])
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(name + (" (up)" if name == "side view" else ""), fontsize=10)
        ax.tick_params(labelsize=7)
    handles = [axes[0].scatter([], [], c=c, s=22) for c in PASS_COLORS]
    extra_h, extra_l = axes[0].get_legend_handles_labels()
    fig.legend(handles + extra_h, ["passes no scored threshold", "passes some", "passes all"] + extra_l,
               fontsize=8, loc="lower center", ncol=5, frameon=False)
    note = f" | {outside} predicted cameras outside the view" if outside else ""
    th = f" | largest threshold {threshold:g}" if threshold is not None else ""
    fig.suptitle(title + th + note, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _save(fig, path)


def circle_layout(names: Sequence[str], groups: Dict[str, str]) -> Dict[str, np.ndarray]:
    """Images on a circle, grouped by ``groups[name]`` with a gap between groups."""
    order = sorted(names, key=lambda n: (groups.get(n, "~"), n))
    keys = [groups.get(n, "~") for n in order]
    gaps = sum(1 for a, b in zip(keys, keys[1:]) if a != b) + 1
    slots, pos, k = len(order) + 2 * gaps, {}, 0
    for idx, n in enumerate(order):
        if idx and keys[idx] != keys[idx - 1]:
            k += 2
        a = 2 * np.pi * k / max(slots, 1)
        pos[n] = np.array([np.cos(a), np.sin(a)])
        k += 1
    return pos


def plot_pair_graph(path: Path, names: Sequence[str], truth: Dict[str, str], rows: List[list],
                    colors: Dict[str, str], title: str) -> Path:
    """Images on a circle coloured by true scene; shortlisted pairs grey, verified pairs blue when
    both images share a true scene and red when they do not (a false pair that passed verification)."""
    pos = circle_layout(names, truth)
    fig = Figure(figsize=(8, 8))
    ax = fig.subplots()
    seg = lambda rs: np.array([[pos[r[0]], pos[r[1]]] for r in rs]).reshape(-1, 2, 2)  # noqa: E731
    short = [r for r in rows if r[5] and not r[6] and r[0] in pos and r[1] in pos]
    good = [r for r in rows if r[6] and r[4] and r[0] in pos and r[1] in pos]
    bad = [r for r in rows if r[6] and not r[4] and r[0] in pos and r[1] in pos]
    ax.add_collection(LineCollection(seg(short), colors="0.75", linewidths=0.4, label=f"shortlisted only ({len(short)})"))
    for rs, c, lab in ((good, "#1f77b4", "verified, same scene"), (bad, "#d62728", "verified, different scenes")):
        w = 0.4 + np.log1p([r[7] for r in rs]) / 3 if rs else 1.0
        ax.add_collection(LineCollection(seg(rs), colors=c, linewidths=w, alpha=0.8, label=f"{lab} ({len(rs)})"))
    xy = np.array([pos[n] for n in names]).reshape(-1, 2)
    ax.scatter(xy[:, 0], xy[:, 1], s=16, c=[colors.get(truth.get(n, ""), "#bcbd22") for n in names], zorder=3)
    for sc, c in colors.items():
        ax.scatter([], [], c=c, s=16, label=f"scene {sc}")
    ax.set_xlim(-1.15, 1.15)
    ax.set_ylim(-1.15, 1.15)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 1.0))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _thumbnail(image_dir: Optional[Path], name: str, size: int) -> Tuple[Optional[np.ndarray], str]:
    if image_dir is None:
        return None, "no image folder"
    p = Path(image_dir) / name
    try:
        from PIL import Image  # noqa: PLC0415
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            return np.asarray(im), ""
    except (OSError, ValueError) as e:
        log.warning("report: cannot read %s (%s)", p, type(e).__name__)
        return None, "missing" if not p.exists() else "unreadable"


def plot_thumbnails(path: Path, image_dir: Optional[Path], names: Sequence[str], truth: Dict[str, str],
                    colors: Dict[str, str], title: str, max_images: int = 48, size: int = 128,
                    cols: int = 8) -> Path:
    """A grid of thumbnails, each framed in the colour of its true scene and captioned with its name."""
    shown = list(names)[:max_images]
    cols = max(1, min(cols, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig = Figure(figsize=(1.6 * cols, 1.75 * rows + 0.5))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, n in zip(axes, shown):
        img, why = _thumbnail(image_dir, n, size)
        if img is not None:
            ax.imshow(img)
        else:
            ax.text(0.5, 0.5, why, ha="center", va="center", fontsize=8, transform=ax.transAxes)
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
        c = colors.get(truth.get(n, ""), "#bcbd22")
        for s in ax.spines.values():
            s.set_edgecolor(c)
            s.set_linewidth(3)
        ax.set_title(f"{n}\n{truth.get(n, '?')}", fontsize=6, color=c)
    more = f" (first {len(shown)} of {len(names)})" if len(names) > len(shown) else f" ({len(names)} images)"
    fig.suptitle(title + more, fontsize=10)
    fig.tight_layout()
    return _save(fig, path, dpi=90)


def centres(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return camera_center(R, t) if len(R) else np.zeros((0, 3))
