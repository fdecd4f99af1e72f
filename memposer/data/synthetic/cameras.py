"""Camera paths (orbit, walk, random views) and intrinsics for synthetic scenes."""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ...geometry import look_at
from .render import RayCaster
from .scene import Scene

PATHS = ("orbit", "walk", "random")


def intrinsics(f: float, width: int, height: int) -> np.ndarray:
    """Pinhole ``K`` with the principal point at the image centre (COLMAP pixel convention)."""
    return np.array([[f, 0, width / 2.0], [0, f, height / 2.0], [0, 0, 1.0]])


def _yaw_pitch_dir(yaw: float, pitch: float) -> np.ndarray:
    return np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])


def _candidates(scene: Scene, path: str, n: int, rng: np.random.Generator) -> List[Tuple[np.ndarray, np.ndarray]]:
    """``n`` (centre, target) pairs along a path; validity is checked by the caller."""
    ext = max(scene.extent, 2.0)
    f = scene.focus
    inner = scene.free_half
    if path == "orbit":
        r = rng.uniform(0.3, 0.45) * ext if inner is not None else rng.uniform(0.35, 0.6) * ext
        h = rng.uniform(1.5, max(2.0, 0.35 * ext))
        span = np.radians(rng.uniform(70, 200))
        a0 = rng.uniform(0, 2 * np.pi)
        out = []
        for a in a0 + np.linspace(0, span, n) + rng.normal(0, span / n / 6, n):
            rr = r * rng.uniform(0.92, 1.08)
            c = f + [rr * np.cos(a), rr * np.sin(a), h * rng.uniform(0.85, 1.15) - f[2]]
            if inner is not None:
                c[:2] = np.clip(c[:2], -inner, inner)
            out.append((c, f + rng.normal(0, 0.05 * ext, 3) * [1, 1, 0.3]))
        return out
    if path == "walk":
        yaw = rng.uniform(0, 2 * np.pi)
        if scene.style == "street":  # walk along the street
            yaw = float(rng.choice([0.0, np.pi])) + rng.normal(0, 0.1)
        d = _yaw_pitch_dir(yaw, 0.0)
        start = f - d * rng.uniform(0.45, 0.6) * ext
        length = rng.uniform(0.2, 0.35) * ext
        eye = rng.uniform(1.4, 2.2)
        out = []
        for s in np.linspace(0, length, n) + rng.normal(0, length / n / 5, n):
            c = start + d * s + np.cross(d, [0, 0, 1]) * rng.normal(0, 0.1)
            c[2] = eye + rng.normal(0, 0.05)
            if inner is not None:
                c[:2] = np.clip(c[:2], -inner, inner)
            look = _yaw_pitch_dir(yaw + rng.normal(0, 0.15), np.radians(rng.uniform(-15, -3)))
            out.append((c, c + look * 5.0))
        return out
    if path == "random":
        out = []
        a0, span = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(90, 240))
        for _ in range(n):
            a = a0 + rng.uniform(0, span)
            rr = rng.uniform(0.3, 0.6) * ext
            c = f + [rr * np.cos(a), rr * np.sin(a), rng.uniform(1.0, max(1.5, 0.4 * ext)) - f[2]]
            if inner is not None:
                c[:2] = np.clip(c[:2], -inner, inner)
            tgt = f + np.concatenate([rng.uniform(-0.25, 0.25, 2) * ext, [rng.uniform(-0.5, 1.0)]])
            out.append((c, tgt))
        return out
    raise ValueError(f"unknown camera path {path!r}; choose from {PATHS}")


def _rolled(R: np.ndarray, t: np.ndarray, roll: float) -> Tuple[np.ndarray, np.ndarray]:
    """Turn the camera about its optical axis (hand-held photos are rarely level)."""
    c, s = np.cos(roll), np.sin(roll)
    Rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return Rz @ R, Rz @ t


def _view_ok(scene: Scene, caster: RayCaster, c: np.ndarray, R: np.ndarray, conf: dict) -> bool:
    """Camera outside boxes, not against a surface, looking mostly at geometry."""
    if c[2] < 0.3 or any(b.contains(c, margin=0.3) for b in scene.boxes):
        return False
    K = intrinsics(24.0, 32, 24)
    xx, yy = np.meshgrid(np.arange(32) + 0.5, np.arange(24) + 0.5)
    d = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)], 1) @ np.linalg.inv(K).T
    d = (d / np.linalg.norm(d, axis=1, keepdims=True)) @ R
    dist, q, _, _ = caster.cast(c[None], d)
    hit = q >= 0
    if hit.mean() < 1 - conf["max_sky_fraction"] or np.median(dist[hit]) < conf["min_view_depth"]:
        return False
    near = np.array([scene.quads[i].role != "far" for i in q[hit]])
    return near.mean() > 0.6


def sample_cameras(scene: Scene, n: int, path: str, width: int, height: int, rng: np.random.Generator,
                   conf: dict, caster: RayCaster) -> Dict[str, np.ndarray]:
    """``n`` valid cameras along ``path``: ``K`` (n, 3, 3), ``R`` (n, 3, 3), ``t`` (n, 3), ``size`` (n, 2)."""
    f_scene = max(width, height) * rng.uniform(*conf["focal_range"])
    poses: List[Tuple[np.ndarray, np.ndarray]] = []
    for attempt in range(conf["max_path_attempts"]):
        want = n - len(poses)
        # Over-sample the path, then keep valid views spread evenly along it.
        kind = path if attempt < conf["max_path_attempts"] - 1 else "random"
        cands = [_rolled(*look_at(c, tgt), np.radians(rng.normal(0, conf["roll_std_deg"])))
                 for c, tgt in _candidates(scene, kind, 2 * want, rng)]
        valid = [p for p in cands if _view_ok(scene, caster, -p[0].T @ p[1], p[0], conf)]
        if len(valid) >= want:
            valid = [valid[i] for i in np.round(np.linspace(0, len(valid) - 1, want)).astype(int)]
        poses += valid
        if len(poses) >= n:
            break
    if len(poses) < n:
        raise RuntimeError(f"could only place {len(poses)} of {n} cameras in a {scene.style} scene")
    Rs, ts = np.stack([p[0] for p in poses]), np.stack([p[1] for p in poses])
    fs = f_scene * (1 + rng.uniform(-1, 1, n) * conf["focal_jitter"])
    Ks = np.stack([intrinsics(f, width, height) for f in fs])
    return dict(K=Ks, R=Rs, t=ts, size=np.tile([width, height], (n, 1)))
