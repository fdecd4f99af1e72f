"""Ray casting of a :class:`Scene` through a pinhole camera, with mip-mapped textures and sun shadows.

Pixel convention (as COLMAP): pixel ``(col, row)`` covers ``[col, col+1) x [row, row+1)``, its centre
is at ``(col + 0.5, row + 0.5)`` in the coordinates that ``K`` maps to, so ``cx = W / 2`` is the
image centre. Poses are world-to-camera, OpenCV axes (see :mod:`memposer.geometry`).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ...geometry import camera_center
from .scene import Scene

_EPS = 1e-6


def _clip_near(P: np.ndarray, near: float) -> np.ndarray:
    """Clip a convex polygon (camera frame, (n, 3)) to ``z >= near`` (Sutherland-Hodgman, one plane)."""
    out = []
    for a, b in zip(P, np.roll(P, -1, axis=0)):
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            out.append(a + (b - a) * (near - a[2]) / (b[2] - a[2]))
    return np.asarray(out).reshape(-1, 3)


class RayCaster:
    """Nearest-hit queries of rays against a scene's quads.

    Exact ray/rectangle intersection; to stay fast, each quad is only tested against the rays inside
    its projected bounding rectangle (pinhole rays) or its shadow footprint (parallel rays).
    """

    def __init__(self, scene: Scene, roles: Optional[Tuple[str, ...]] = None):
        keep = [i for i, q in enumerate(scene.quads) if roles is None or q.role in roles]
        O, E1, E2 = (a[keep] for a in scene.arrays())
        self.index = np.asarray(keep, dtype=np.int64)
        self.O, self.E1, self.E2 = O, E1, E2
        self.N = np.cross(E1, E2)
        self.L1, self.L2 = (E1 ** 2).sum(1), (E2 ** 2).sum(1)
        self.corners = np.stack([O, O + E1, O + E1 + E2, O + E2], 1)  # (Q, 4, 3)

    def _hit(self, k: int, o: np.ndarray, d: np.ndarray):
        """Distance and ``u, v`` of rays ``(o, d)`` against quad ``k``; inf where they miss."""
        n = self.N[k]
        denom = d @ n
        w = self.O[k] - o
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (w @ n) / denom
        p = t[:, None] * d - w  # hit point relative to the quad origin
        u, v = p @ self.E1[k] / self.L1[k], p @ self.E2[k] / self.L2[k]
        ok = (t > 1e-4) & (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1) & (np.abs(denom) > _EPS)
        return np.where(ok, t, np.inf), u, v

    def cast_pinhole(self, K: np.ndarray, R: np.ndarray, t: np.ndarray, width: int, height: int, ss: int = 1):
        """Rays through every (sub)pixel; returns ``dirs`` (H*ss, W*ss, 3) and per-ray distance, quad, u, v."""
        dirs, zc = pixel_rays(K, R, width, height, ss)
        H, W = height * ss, width * ss
        dirs, zc = dirs.reshape(H, W, 3), zc.reshape(H, W)
        c = camera_center(R, t)
        dist, quad = np.full((H, W), np.inf), np.full((H, W), -1, np.int64)
        uu, vv = np.zeros((H, W)), np.zeros((H, W))
        Ks = K.copy()
        Ks[:2] *= ss
        for k in range(len(self.index)):
            poly = _clip_near(self.corners[k] @ R.T + t, 1e-3)
            if len(poly) == 0:
                continue
            uv = (poly[:, :2] / poly[:, 2:]) * [Ks[0, 0], Ks[1, 1]] + Ks[:2, 2]
            x0, y0 = np.floor(uv.min(0)).astype(int) - 1
            x1, y1 = np.ceil(uv.max(0)).astype(int) + 1
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
            if x0 >= x1 or y0 >= y1:
                continue
            d = dirs[y0:y1, x0:x1].reshape(-1, 3)
            tk, u, v = self._hit(k, c[None], d)
            tk, u, v = (a.reshape(y1 - y0, x1 - x0) for a in (tk, u, v))
            better = tk < dist[y0:y1, x0:x1]
            dist[y0:y1, x0:x1][better] = tk[better]
            quad[y0:y1, x0:x1][better] = self.index[k]
            uu[y0:y1, x0:x1][better] = u[better]
            vv[y0:y1, x0:x1][better] = v[better]
        return dirs.reshape(-1, 3), zc.reshape(-1), dist.reshape(-1), quad.reshape(-1), uu.reshape(-1), vv.reshape(-1)

    def occluded(self, origins: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Whether parallel rays ``origins + s * direction`` (s > 0) hit any quad."""
        direction = direction / np.linalg.norm(direction)
        a = np.cross(direction, [1.0, 0, 0] if abs(direction[0]) < 0.9 else [0, 1.0, 0])
        a /= np.linalg.norm(a)
        b = np.cross(direction, a)
        proj = np.stack([origins @ a, origins @ b], 1)
        out = np.zeros(len(origins), bool)
        for k in range(len(self.index)):
            cp = np.stack([self.corners[k] @ a, self.corners[k] @ b], 1)
            lo, hi = cp.min(0) - 1e-6, cp.max(0) + 1e-6
            sel = np.nonzero(~out & (proj[:, 0] >= lo[0]) & (proj[:, 0] <= hi[0]) & (proj[:, 1] >= lo[1]) & (proj[:, 1] <= hi[1]))[0]
            if len(sel):
                tk, _, _ = self._hit(k, origins[sel], np.broadcast_to(direction, (len(sel), 3)))
                out[sel[np.isfinite(tk)]] = True
        return out

    def cast(self, origins: np.ndarray, dirs: np.ndarray):
        """Nearest hit of arbitrary rays (no culling; for small ray sets): distance, quad, u, v."""
        origins = np.broadcast_to(origins, dirs.shape)
        best = np.full(len(dirs), np.inf)
        quad = np.full(len(dirs), -1, np.int64)
        uu, vv = np.zeros(len(dirs)), np.zeros(len(dirs))
        for k in range(len(self.index)):
            tk, u, v = self._hit(k, origins, dirs)
            better = tk < best
            best[better], quad[better], uu[better], vv[better] = tk[better], self.index[k], u[better], v[better]
        return best, quad, uu, vv


def _bilinear(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    h, w = tex.shape[:2]
    x = np.clip(u * w - 0.5, 0, w - 1)
    y = np.clip(v * h - 0.5, 0, h - 1)
    x0, y0 = np.minimum(x.astype(np.int64), w - 2 if w > 1 else 0), np.minimum(y.astype(np.int64), h - 2 if h > 1 else 0)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    return ((tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx) * (1 - fy)
            + (tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx) * fy)


def _sample_textures(scene: Scene, q: np.ndarray, u: np.ndarray, v: np.ndarray, texels: np.ndarray) -> np.ndarray:
    """Trilinear (mip-mapped) albedo lookup; ``texels`` is the pixel footprint in level-0 texels."""
    out = np.zeros((len(q), 3), np.float32)
    lod = np.log2(np.maximum(texels, 1.0))
    for qi in np.unique(q):
        sel = np.nonzero(q == qi)[0]
        pyr = scene.pyramid(int(qi))
        top = len(pyr) - 1
        lq = np.minimum(lod[sel], top)
        l0 = np.floor(lq).astype(np.int64)
        for L in np.unique(l0):
            s = sel[l0 == L]
            a = _bilinear(pyr[L], u[s], v[s])
            if L < top:
                f = (lod[s] - L).clip(0, 1)[:, None].astype(np.float32)
                a = a * (1 - f) + _bilinear(pyr[L + 1], u[s], v[s]) * f
            out[s] = a
    return out


def pixel_rays(K: np.ndarray, R: np.ndarray, width: int, height: int, ss: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Unit world-space ray directions (H*ss*W*ss, 3) and their camera-frame z component."""
    off = (np.arange(ss) + 0.5) / ss
    cols = ((np.arange(width)[:, None] + off[None]).reshape(-1) - K[0, 2]) / K[0, 0]
    rows = ((np.arange(height)[:, None] + off[None]).reshape(-1) - K[1, 2]) / K[1, 1]
    d_cam = np.empty((len(rows), len(cols), 3))
    d_cam[..., 0] = cols[None, :] - K[0, 1] / K[0, 0] * rows[:, None]  # skew (0 for our cameras)
    d_cam[..., 1] = rows[:, None]
    d_cam[..., 2] = 1.0
    d_cam = d_cam.reshape(-1, 3)
    d_cam /= np.linalg.norm(d_cam, axis=1, keepdims=True)
    return d_cam @ R, d_cam[:, 2]  # R^T d for row vectors


def render_view(scene: Scene, K: np.ndarray, R: np.ndarray, t: np.ndarray, width: int, height: int,
                conf: dict, rng: Optional[np.random.Generator] = None,
                casters: Optional[Dict[str, RayCaster]] = None) -> Dict[str, np.ndarray]:
    """Render one view: ``image`` uint8 (H, W, 3), ``depth`` float32 (H, W) z-depth (inf = sky), ``quad`` ids."""
    casters = casters or make_casters(scene)
    ss = int(conf.get("supersample", 1))
    c = camera_center(R, t)
    dirs, zc, dist, q, u, v = casters["all"].cast_pinhole(K, R, t, width, height, ss)
    hit = q >= 0
    col = np.empty((len(dirs), 3), np.float32)
    # Sky: smooth gradient (few features, as a real overcast/blue sky).
    hz, zn = scene.sky
    el = np.clip(dirs[~hit, 2], 0, 1)[:, None] ** 0.6
    col[~hit] = hz * (1 - el) + zn * el
    if hit.any():
        qh, dh = q[hit], dirs[hit]
        O, E1, E2 = scene.arrays()
        n = np.cross(E1, E2)
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        nh = n[qh]
        cos_i = (nh * dh).sum(1)
        nh = nh * -np.sign(cos_i)[:, None]  # double-sided: normal towards the camera
        f = K[0, 0] * ss
        texels = dist[hit] * zc[hit] / f / np.sqrt(np.maximum(np.abs(cos_i), 0.05)) * scene.texels_per_m[qh]
        albedo = _sample_textures(scene, qh, u[hit], v[hit], texels)
        lam = np.maximum(nh @ scene.light_dir, 0.0)
        if conf.get("shadows", True):
            lit = np.nonzero(lam > 0)[0]
            p = c + dh[lit] * dist[hit][lit, None] + nh[lit] * 1e-3
            lam[lit[casters["occluders"].occluded(p, scene.light_dir)]] = 0.0
        col[hit] = albedo * (scene.ambient + scene.diffuse * lam)[:, None]
    img = col.reshape(height, ss, width, ss, 3).mean((1, 3)) if ss > 1 else col.reshape(height, width, 3)
    if rng is not None:  # per-photo exposure, white balance and sensor noise
        pj = conf.get("photometric", 0.08)
        img = img * rng.uniform(1 - pj, 1 + pj) * (1 + rng.normal(0, pj / 3, 3))
        img = img + rng.normal(0, conf.get("noise", 1.5) / 255.0, img.shape)
    image = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    z = np.where(hit, dist * zc, np.inf).reshape(height * ss, width * ss)[ss // 2::ss, ss // 2::ss]
    qmap = q.reshape(height * ss, width * ss)[ss // 2::ss, ss // 2::ss]
    return dict(image=image, depth=z.astype(np.float32), quad=qmap)


def make_casters(scene: Scene) -> Dict[str, RayCaster]:
    return dict(all=RayCaster(scene), occluders=RayCaster(scene, roles=("box",)))
