"""Synthetic point-track scenes: the training data of the track MemPoser, nearly free to make.

A scene is random 3D points seen by cameras of one of five layouts (``orbit`` around an object,
``landmark`` photographed from a wide front sector at mixed distances, ``walk`` along a smooth
path as a video would, ``handheld``: a video around an object that sweeps back and forth over an
arc while rising and falling, the object off-centre; ``turntable``: one or two full, evenly spaced
turns around an object; the last two off in the default mix). Each point is observed where it projects inside the image and faces the
camera; observations then get pixel noise, random drops and wrong positions (outlier matches),
and are normalised by a *prior* focal length that is often wrong, as in the pipeline, where COLMAP
assumes ``1.2 * max(width, height)`` without EXIF.

``sample_scene(rng, conf)`` returns one scene as numpy arrays; :func:`collate_track_scenes` pads
scenes into a batch::

    {"obs": (B,N,P,2) normalised image points, "vis": (B,N,P) bool, "mask": (B,N) bool,
     "R": (B,N,3,3), "t": (B,N,3) world-to-camera, "exif": (B,N) bool focal prior from EXIF}
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from memposer.geometry import look_at, roll_matrix

default_conf: Dict[str, Any] = {
    "cameras": [6, 24],             # cameras per scene (inclusive range)
    "points": 1024,                 # 3D points drawn (before visibility)
    "tracks": 256,                  # tracks kept per scene (the model's P)
    "layouts": {"orbit": 0.45, "landmark": 0.35, "walk": 0.2},
    "roll_flip": 0.15,              # share of cameras rolled by 90-180 degrees (upside-down views)
    # Probability that a scene's cameras all share one extra roll, 0-360 degrees: a turntable shot
    # with the camera on its side (middlebury's dino: every view's image x axis along the turntable's
    # axis). Per-camera flips alone almost never roll a whole scene. 0 = off, drawing nothing.
    "roll_global": 0.0,
    "focal_range": [0.6, 1.6],      # true focal / max image side
    # Probability that all cameras of a scene share one image size and focal (a video, a turntable,
    # one person's camera): with no EXIF they then all share one wrong prior, as middlebury does
    # (true focal ~2.4 x the long side, COLMAP's prior 1.2 x). 0 = off, drawing nothing.
    "shared_camera": 0.0,
    "exif": 0.5,                    # share of cameras whose focal prior is close to the truth; [lo, hi]: drawn per scene
    "exif_noise": 0.03,             # log-normal sigma of an EXIF focal prior around the truth
    "noise_px": [0.3, 2.0],         # pixel noise sigma range
    "drop": [0.0, 0.4],             # random share of visible observations dropped
    "outliers": [0.0, 0.2],         # share of observations replaced by a wrong position
    "min_obs_per_camera": 8,
    # Realism knobs, off for the shipped checkpoint (docs/results.md: its gap on real photos):
    "background": 0.0,              # share of points on a far background (not in walks); [lo, hi]: drawn per scene
    "distance_scale": [1.0, 1.0],   # orbit / landmark camera distances times this (small objects)
    # Real tracks are short: a descriptor matches only over a limited change of viewpoint and scale
    # (beer's reference model: median track length 3 of 24 frames). With probability view_window_p
    # a scene gives each point a preferred viewing ray (towards a random camera that sees it) and
    # keeps the observations within view_window degrees of it and within a factor view_scale of its
    # distance. 0 = off, as the first shipped checkpoint was trained.
    "view_window_p": 0.0,
    "view_window": [10.0, 60.0],    # degrees, drawn per scene, then 0.7-1.3x per point
    "view_scale": 2.5,              # max distance ratio to the preferred view
}

_SIZES = np.array([(1024, 768), (768, 1024), (1024, 576), (576, 1024), (1024, 1024), (1024, 683)])


def _range(rng: np.random.Generator, r: Sequence[float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def object_points(rng: np.random.Generator, n: int) -> tuple:
    """Points on a random blobby surface of radius ~1 around the origin, with outward normals."""
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    axes = rng.uniform(0.5, 1.3, size=3)
    bumps = 1 + 0.15 * np.sin(d @ rng.normal(size=(3, 4)) * rng.uniform(1, 4)).sum(1) / 2
    p = d * axes * bumps[:, None]
    normal = d / axes  # ellipsoid normal direction (bumps ignored: close enough for visibility)
    return p, normal / np.linalg.norm(normal, axis=1, keepdims=True)


def _facade_points(rng: np.random.Generator, n: int) -> tuple:
    """A landmark: a relief on a vertical plane y=0 plus a free-standing body in front of it."""
    k = n // 2
    wall = np.stack([rng.uniform(-2, 2, k), rng.uniform(-0.3, 0.3, k) ** 3, rng.uniform(-1, 2, k)], 1)
    wn = np.tile([0.0, -1.0, 0.0], (k, 1))
    body, bn = object_points(rng, n - k)
    body = body * 0.8 + np.array([0, -1.2, 0.3])
    return np.concatenate([wall, body]), np.concatenate([wn, bn])


def _room_points(rng: np.random.Generator, n: int) -> tuple:
    """Points on the walls of a room (inward normals), for walk-through videos."""
    d = rng.normal(size=(n, 3))
    d /= np.abs(d).max(1, keepdims=True)  # on the cube surface
    size = rng.uniform(2, 5, size=3) * np.array([1, 1, 0.5])
    p = d * size
    normal = np.zeros_like(d)
    ax = np.abs(d).argmax(1)
    normal[np.arange(n), ax] = -np.sign(d[np.arange(n), ax])
    return p, normal


def _cameras(rng: np.random.Generator, layout: str, n: int) -> tuple:
    """Camera centres and look-at targets for a layout."""
    if layout == "orbit":
        a0, span = rng.uniform(0, 2 * np.pi), rng.uniform(np.pi / 3, 2 * np.pi)
        az = a0 + (np.sort(rng.uniform(0, span, n)) if rng.random() < 0.5 else rng.uniform(0, span, n))
        el = np.deg2rad(rng.uniform(-15, 60, n) if rng.random() < 0.5 else np.full(n, rng.uniform(-10, 50)) + rng.normal(0, 3, n))
        r = rng.uniform(2.5, 5.0) * rng.uniform(0.85, 1.15, n)
        c = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], 1)
        target = rng.normal(0, 0.15, (n, 3))
    elif layout == "landmark":
        az = np.deg2rad(-90 + rng.uniform(-80, 80, n))
        r = np.exp(rng.uniform(np.log(3), np.log(12), n))
        el = np.deg2rad(rng.uniform(-5, 35, n))
        c = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), 0.5 + r * np.sin(el) * 0.5], 1)
        target = np.array([0, -0.6, 0.5]) + rng.normal(0, 0.4, (n, 3))
    elif layout == "turntable":
        return _turntable_cameras(rng, n)
    elif layout == "handheld":
        return _handheld_cameras(rng, n)
    else:  # walk: a smooth path in a room, looking ahead or to the side
        s = np.linspace(0, 1, n)
        k = rng.normal(0, 1, (3, 3))
        c = np.stack([np.cos(np.pi * s * rng.uniform(0.3, 1.5)) * rng.uniform(0.5, 1.5),
                      np.sin(np.pi * s * rng.uniform(0.3, 1.5)) * rng.uniform(0.5, 1.5),
                      0.2 * np.sin(2 * np.pi * s * k[0, 0])], 1)
        ahead = np.gradient(c, axis=0)
        ahead /= np.linalg.norm(ahead, axis=1, keepdims=True) + 1e-9
        side = np.cross(ahead, [0, 0, 1.0])
        w = rng.uniform(-1, 1)
        target = c + 3 * (ahead * (1 - abs(w)) + side * w) + rng.normal(0, 0.2, (n, 3))
    return c, target


def _turntable_cameras(rng: np.random.Generator, n: int) -> tuple:
    """An object turned on a turntable before a fixed camera (middlebury's temple and dino): one or
    two full turns at fixed elevations, evenly spaced, one distance, every view aimed at the centre.
    With real, short tracks the ring is linked only through chains of neighbours."""
    rings = 1 if rng.random() < 0.7 else 2
    ring = np.sort(rng.integers(rings, size=n))
    az = np.empty(n)
    for k in range(rings):
        m = int((ring == k).sum())
        az[ring == k] = rng.uniform(0, 2 * np.pi) + 2 * np.pi * (np.arange(m) + rng.normal(0, 0.1, m)) / max(m, 1)
    el = np.deg2rad(rng.uniform(-10, 50, rings))[ring] + np.deg2rad(rng.normal(0, 0.5, n))
    r = rng.uniform(2.5, 5.0) * (1 + rng.normal(0, 0.01, n))
    c = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], 1)
    return c, rng.normal(0, 0.03, (n, 3))


def _handheld_cameras(rng: np.random.Generator, n: int) -> tuple:
    """A handheld video around an object: frames in capture order along a path that sweeps back and
    forth over an arc of azimuth, rises and falls in elevation (side views to nearly top-down),
    moves in and out, and aims at the object only roughly."""
    s = np.sort(rng.uniform(0, 1, n))

    def wave(cycles: float) -> np.ndarray:  # in [-1, 1], ``cycles`` periods over the video
        return np.sin(2 * np.pi * cycles * s + rng.uniform(0, 2 * np.pi))

    az = rng.uniform(0, 2 * np.pi) + np.deg2rad(rng.uniform(40, 200)) / 2 * wave(rng.uniform(0.5, 2.5))
    el = np.deg2rad(np.clip(rng.uniform(0, 45) + rng.uniform(0, 35) * wave(rng.uniform(0.3, 2.0)), -15, 80))
    r = rng.uniform(2.5, 6.0) * (1 + rng.uniform(0, 0.25) * wave(rng.uniform(0.3, 1.5)))
    c = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)], 1)
    aim = np.tan(np.deg2rad(rng.uniform(2, 12)))  # how far off the object the camera points
    return c, rng.normal(0, 1, (n, 3)) * (r * aim)[:, None]


def view_window_mask(rng: np.random.Generator, seen: np.ndarray, to_cam: np.ndarray, conf: dict) -> np.ndarray:
    """(N,P) mask: observations within a point's viewing window (see ``view_window`` in default_conf).

    ``seen`` (N,P) is what could be observed, ``to_cam`` (N,P,3) the vectors from each point to each
    camera centre; ``conf`` needs ``view_window`` (degrees range) and ``view_scale``."""
    n, p = seen.shape
    dist = np.linalg.norm(to_cam, axis=-1)
    ray = to_cam / np.maximum(dist, 1e-9)[..., None]
    ref = np.argmax(rng.random((n, p)) * seen, axis=0)  # a random camera that sees the point
    cols = np.arange(p)
    cos = (ray * ray[ref, cols][None]).sum(-1)
    theta = np.deg2rad(_range(rng, conf["view_window"]) * rng.uniform(0.7, 1.3, p))
    scale = np.abs(np.log(dist / dist[ref, cols][None])) <= np.log(conf["view_scale"])
    return (cos >= np.cos(theta)) & scale


def sample_scene(rng: np.random.Generator, conf: Optional[Dict[str, Any]] = None) -> Dict[str, np.ndarray]:
    """One random scene: ``obs`` (N,P,2) normalised points, ``vis`` (N,P), ``R`` (N,3,3), ``t`` (N,3).

    Tracks (columns) are the P points, among those seen at least twice, drawn with probability
    growing with their length, as the pipeline keeps its longest tracks. Cameras with fewer than
    ``min_obs_per_camera`` observations are dropped, so N can be below the drawn count (>= 2).
    """
    conf = {**default_conf, **(conf or {})}
    names, probs = zip(*conf["layouts"].items())
    layout = str(rng.choice(names, p=np.array(probs) / sum(probs)))
    for _ in range(20):
        out = _try_scene(rng, conf, layout)
        if out is not None:
            return out
    raise RuntimeError(f"could not make a {layout} scene with enough observations (conf {conf})")


def _try_scene(rng: np.random.Generator, conf: dict, layout: str) -> Optional[Dict[str, np.ndarray]]:
    n = int(rng.integers(conf["cameras"][0], conf["cameras"][1] + 1))
    make = {"orbit": object_points, "handheld": object_points, "turntable": object_points, "landmark": _facade_points, "walk": _room_points}
    pts, normals = make[layout](rng, conf["points"])
    centres, targets = _cameras(rng, layout, n)
    if layout != "walk":
        centres = centres * _range(rng, conf["distance_scale"])
        bg = conf["background"]  # a number draws nothing: old seeds give the old scenes
        k = int(round((_range(rng, bg) if isinstance(bg, (list, tuple)) else bg) * len(pts)))
        if k:  # a far backdrop: a shell behind the object, seen from inside (normals point inwards)
            d = rng.normal(size=(k, 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            radius = np.linalg.norm(centres, axis=1).max() * rng.uniform(1.5, 3.0)
            pts[:k], normals[:k] = d * radius * rng.uniform(0.9, 1.1, (k, 1)), -d
    Rs, ts = [], []
    for c, tg in zip(centres, targets):
        R, t = look_at(c, tg)
        roll = rng.uniform(-10, 10) if rng.random() > conf["roll_flip"] else rng.choice([90, 180, -90]) + rng.uniform(-15, 15)
        Rz = roll_matrix(np.deg2rad(roll))
        Rs.append(Rz @ R)
        ts.append(Rz @ t)
    R, t = np.stack(Rs), np.stack(ts)
    if conf["roll_global"] > 0 and rng.random() < conf["roll_global"]:  # no draw when off: old seeds stay
        Rz = roll_matrix(rng.uniform(0, 2 * np.pi))
        R, t = Rz @ R, t @ Rz.T
    sizes = _SIZES[rng.integers(len(_SIZES), size=n)].astype(float)  # (N, 2) width, height
    f = sizes.max(1) * rng.uniform(*conf["focal_range"], size=n)
    if conf["shared_camera"] > 0 and rng.random() < conf["shared_camera"]:  # no draw when off: old seeds stay
        sizes, f = np.repeat(sizes[:1], n, 0), np.repeat(f[:1], n)
    X = np.einsum("nij,pj->npi", R, pts) + t[:, None]                     # (N,P,3) camera coords
    z = X[..., 2]
    uv = f[:, None, None] * X[..., :2] / np.maximum(z, 1e-6)[..., None] + sizes[:, None] / 2
    inside = (z > 0.1) & (uv >= 0).all(-1) & (uv < sizes[:, None]).all(-1)
    to_cam = centres[:, None] - pts[None]
    facing = (normals[None] * to_cam).sum(-1) / np.linalg.norm(to_cam, axis=-1) > rng.uniform(0.05, 0.35)
    if conf["view_window_p"] > 0 and rng.random() < conf["view_window_p"]:  # no draw when off: old seeds stay
        facing &= view_window_mask(rng, inside & facing, to_cam, conf)
    vis = inside & facing & (rng.random(z.shape) >= _range(rng, conf["drop"]))
    uv = uv + rng.normal(0, _range(rng, conf["noise_px"]), uv.shape)
    wrong = vis & (rng.random(z.shape) < _range(rng, conf["outliers"]))
    uv[wrong] = rng.uniform(0, 1, (int(wrong.sum()), 2)) * np.broadcast_to(sizes[:, None], uv.shape)[wrong]
    length = vis.sum(0)
    cand = np.flatnonzero(length >= 2)
    if len(cand) < 16:
        return None
    p = length[cand].astype(float)
    keep = rng.choice(cand, size=min(conf["tracks"], len(cand)), replace=False, p=p / p.sum())
    vis, uv = vis[:, keep], uv[:, keep]
    cams = vis.sum(1) >= conf["min_obs_per_camera"]
    if cams.sum() < 2:
        return None
    # the focal the pipeline would assume: EXIF (close to the truth) or COLMAP's default prior
    share = conf["exif"] if np.isscalar(conf["exif"]) else _range(rng, conf["exif"])
    exif = rng.random(n) < share
    f_prior = np.where(exif, f * np.exp(rng.normal(0, conf["exif_noise"], n)), 1.2 * sizes.max(1))
    obs = (uv - sizes[:, None] / 2) / f_prior[:, None, None]
    obs[~vis] = 0
    return {"obs": obs[cams].astype(np.float32), "vis": vis[cams], "R": R[cams].astype(np.float32),
            "t": t[cams].astype(np.float32), "layout": layout,
            "focal_ratio": (f_prior / f)[cams],  # prior / true focal: obs x this = true normalised points
            "exif": exif[cams]}


def collate_track_scenes(scenes: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
    """Pad scenes to the batch's largest camera and track counts (see the module docstring)."""
    B = len(scenes)
    N = max(s["obs"].shape[0] for s in scenes)
    P = max(s["obs"].shape[1] for s in scenes)
    obs = torch.zeros(B, N, P, 2)
    vis = torch.zeros(B, N, P, dtype=torch.bool)
    mask = torch.zeros(B, N, dtype=torch.bool)
    R = torch.eye(3).repeat(B, N, 1, 1)
    t = torch.zeros(B, N, 3)
    exif = torch.zeros(B, N, dtype=torch.bool)
    for b, s in enumerate(scenes):
        n, p = s["obs"].shape[:2]
        obs[b, :n, :p] = torch.from_numpy(s["obs"])
        vis[b, :n, :p] = torch.from_numpy(s["vis"])
        mask[b, :n] = True
        R[b, :n] = torch.from_numpy(s["R"])
        t[b, :n] = torch.from_numpy(s["t"])
        if "exif" in s:
            exif[b, :n] = torch.from_numpy(np.asarray(s["exif"], bool))
    return {"obs": obs, "vis": vis, "mask": mask, "R": R, "t": t, "exif": exif}


def sample_batch(seed: int, batch_size: int, conf: Optional[Dict[str, Any]] = None) -> Dict[str, torch.Tensor]:
    """``batch_size`` scenes from one seed, collated: the same seed always gives the same batch."""
    rng = np.random.default_rng(seed)
    return collate_track_scenes([sample_scene(rng, conf) for _ in range(batch_size)])
