"""Synthetic 3D scenes: textured planar quads (ground, walls, boxes) laid out in a few styles.

World frame: metres, ``z`` up, ground at ``z = 0``. A quad is ``origin + u * e1 + v * e2`` for
``u, v`` in ``[0, 1]``; its texture row index follows ``v`` and column index follows ``u``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .textures import FAMILIES, make_texture, mip_pyramid

STYLES = ("courtyard", "street", "plaza", "monument")


@dataclass
class Quad:
    origin: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    kind: str  # texture kind
    role: str  # ground / wall / box / far


@dataclass
class Box:
    """A yawed box standing on ``z0``; used for its faces and to keep cameras out of it."""
    center: np.ndarray  # (x, y) of the footprint centre
    size: np.ndarray  # (sx, sy, sz)
    yaw: float
    z0: float = 0.0

    def corners(self) -> np.ndarray:
        """8 corners (bottom 4 then top 4), counter-clockwise seen from above."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        ax, ay = np.array([c, s]) * self.size[0] / 2, np.array([-s, c]) * self.size[1] / 2
        xy = np.stack([self.center - ax - ay, self.center + ax - ay, self.center + ax + ay, self.center - ax + ay])
        bot = np.concatenate([xy, np.full((4, 1), self.z0)], 1)
        return np.concatenate([bot, bot + [0, 0, self.size[2]]], 0)

    def contains(self, p: np.ndarray, margin: float = 0.0) -> bool:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        d = np.asarray(p[:2]) - self.center
        lx, ly = c * d[0] + s * d[1], -s * d[0] + c * d[1]
        return (abs(lx) <= self.size[0] / 2 + margin and abs(ly) <= self.size[1] / 2 + margin
                and self.z0 - margin <= p[2] <= self.z0 + self.size[2] + margin)


@dataclass
class Scene:
    """Geometry, textures and lighting of one scene."""
    quads: List[Quad]
    texture_jobs: List[dict]  # per quad: arguments of its texture, made on first use
    texels_per_m: np.ndarray  # (Q,) texel density of level 0 per quad
    boxes: List[Box]
    bounds: np.ndarray  # (2, 3) min / max of the scene content (without far ground)
    focus: np.ndarray  # (3,) point the cameras look around
    style: str
    family: str
    light_dir: np.ndarray  # (3,) unit vector towards the sun
    ambient: float
    diffuse: float
    sky: Tuple[np.ndarray, np.ndarray]  # horizon colour, zenith colour
    free_half: Optional[np.ndarray] = None  # cameras stay within |x|, |y| <= free_half (walls around)
    meta: dict = field(default_factory=dict)
    _pyramids: dict = field(default_factory=dict, repr=False)

    def pyramid(self, k: int) -> List[np.ndarray]:
        """Mip pyramid of quad ``k``'s texture, generated on first use from the quad's own seed, so
        the result does not depend on which quads were seen first (or at all)."""
        if k not in self._pyramids:
            job = self.texture_jobs[k]
            rng = np.random.default_rng(job["seed"])
            tex = make_texture(job["kind"], job["width"], job["height"], FAMILIES[self.family], rng, job["tpm"])
            self._pyramids[k] = mip_pyramid(np.clip(tex * job["gain"], 0, 1))
        return self._pyramids[k]

    @property
    def extent(self) -> float:
        """Scene size in metres: diagonal of the horizontal footprint of its content."""
        return float(np.linalg.norm(self.bounds[1, :2] - self.bounds[0, :2]))

    def arrays(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        O = np.stack([q.origin for q in self.quads]).astype(np.float64)
        E1 = np.stack([q.e1 for q in self.quads]).astype(np.float64)
        E2 = np.stack([q.e2 for q in self.quads]).astype(np.float64)
        return O, E1, E2


def box_faces(b: Box, kind_sides: List[str], kind_top: str) -> List[Quad]:
    """4 side faces (outward normals, texture rows top-to-bottom) and the top face."""
    C = b.corners()
    quads = []
    for i in range(4):
        a, c = C[4 + i], C[4 + (i + 1) % 4]  # top edge, walking counter-clockwise
        quads.append(Quad(a, c - a, C[i] - C[4 + i], kind_sides[i % len(kind_sides)], "box"))
    quads.append(Quad(C[4], C[5] - C[4], C[7] - C[4], kind_top, "box"))
    return quads


def _wall(p0: np.ndarray, p1: np.ndarray, height: float, thickness: float = 0.3) -> Box:
    d = np.asarray(p1, float) - np.asarray(p0, float)
    return Box(center=(np.asarray(p0) + np.asarray(p1)) / 2, size=np.array([float(np.linalg.norm(d)), thickness, height]),
               yaw=float(np.arctan2(d[1], d[0])))


def _random_boxes(rng: np.random.Generator, n: int, half: np.ndarray, fam: dict, size_range, height_range,
                  keep_clear: Optional[np.ndarray] = None, clear_r: float = 0.0) -> List[Box]:
    """Non-overlapping boxes inside ``[-half, half]``; some get a smaller box stacked on top."""
    boxes: List[Box] = []
    for _ in range(n * 20):
        if len([b for b in boxes if b.z0 == 0]) >= n:
            break
        sx, sy = rng.uniform(*size_range, size=2)
        room = half - max(sx, sy) / 2 - 0.3
        if (room <= 0).any():
            continue
        c = rng.uniform(-room, room)
        r = np.hypot(sx, sy) / 2
        if any(np.linalg.norm(c - o.center) < r + np.hypot(*o.size[:2]) / 2 + 0.4 for o in boxes if o.z0 == 0):
            continue
        if keep_clear is not None and np.linalg.norm(c - keep_clear) < r + clear_r:
            continue
        b = Box(c, np.array([sx, sy, rng.uniform(*height_range)]), float(rng.uniform(0, np.pi)))
        boxes.append(b)
        if rng.random() < 0.3:
            f = rng.uniform(0.4, 0.8)
            boxes.append(Box(c + rng.uniform(-0.1, 0.1, 2) * b.size[:2], b.size * [f, f, rng.uniform(0.3, 0.8)],
                             b.yaw + float(rng.uniform(-0.4, 0.4)), z0=float(b.size[2])))
    return boxes


def build_scene(rng: np.random.Generator, style: str, family: str, conf: dict) -> Scene:
    """Random layout of a ``style`` with textures of a ``family`` (see :data:`textures.FAMILIES`)."""
    if style not in STYLES:
        raise ValueError(f"unknown scene style {style!r}; choose from {STYLES}")
    if family not in FAMILIES:
        raise ValueError(f"unknown texture family {family!r}; choose from {sorted(FAMILIES)}")
    fam = FAMILIES[family]
    pick = lambda role: str(rng.choice(fam[role]))  # noqa: E731
    size = float(rng.uniform(*conf["scene_size"]))
    quads: List[Quad] = []
    boxes: List[Box] = []
    walls: List[Box] = []
    free_half = None
    if style == "courtyard":
        half = np.array([size / 2, size / 2 * rng.uniform(0.7, 1.0)])
        height = rng.uniform(3.0, 6.0)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        open_side = int(rng.integers(4)) if rng.random() < 0.5 else -1
        for i in range(4):
            if i != open_side:
                walls.append(_wall(corners[i], corners[(i + 1) % 4], height * rng.uniform(0.8, 1.2)))
        if open_side < 0:
            free_half = half - 0.6
        boxes = _random_boxes(rng, int(rng.integers(3, 6)), half - 0.8, fam, (0.6, 2.2), (0.5, 2.5))
    elif style == "street":
        half = np.array([size / 2, size / 4])
        for sgn in (-1, 1):  # facades in segments of different heights
            xs = np.sort(np.concatenate([[-half[0], half[0]], rng.uniform(-half[0], half[0], int(rng.integers(1, 4)))]))
            for x0, x1 in zip(xs[:-1], xs[1:]):
                if x1 - x0 > 0.5:
                    depth = rng.uniform(0.0, 0.6)
                    y = sgn * (half[1] + depth)
                    walls.append(_wall(np.array([x0, y]), np.array([x1, y]), rng.uniform(3.0, 8.0)))
        boxes = _random_boxes(rng, int(rng.integers(3, 6)), half - [0.5, 0.6], fam, (0.5, 1.8), (0.5, 2.0))
        free_half = np.array([half[0] + 2.0, half[1] - 0.4])
    elif style == "plaza":
        half = np.array([size / 2, size / 2])
        boxes = _random_boxes(rng, int(rng.integers(5, 9)), half * 0.8, fam, (0.5, 2.5), (0.6, 4.0))
    else:  # monument: one tall stacked object in the middle, a few small ones around
        half = np.array([size / 2, size / 2])
        core = Box(np.zeros(2), np.array([*rng.uniform(1.5, 3.0, 2), rng.uniform(2.0, 4.0)]), float(rng.uniform(0, np.pi)))
        boxes = [core, Box(np.zeros(2), core.size * [0.6, 0.6, 0.7], core.yaw + 0.3, z0=float(core.size[2]))]
        boxes += _random_boxes(rng, int(rng.integers(2, 5)), half * 0.5, fam, (0.4, 1.2), (0.3, 1.5),
                               keep_clear=np.zeros(2), clear_r=2.0)
    for b in boxes:
        sides = [pick("box") for _ in range(int(rng.integers(1, 3)))]
        quads += box_faces(b, sides, pick("box"))
    for w in walls:
        kind = pick("wall")
        quads += box_faces(w, [kind], kind)
    # Ground: a textured patch over the scene, then a ring of coarser far ground up to the horizon.
    g = half + conf["ground_margin"]
    ground = pick("ground")
    quads.insert(0, Quad(np.array([-g[0], -g[1], 0.0]), np.array([2 * g[0], 0, 0.0]), np.array([0, 2 * g[1], 0.0]), ground, "ground"))
    F = conf["far_ground"] * size
    for x0, x1, y0, y1 in ((-F, F, -F, -g[1]), (-F, F, g[1], F), (-F, -g[0], -g[1], g[1]), (g[0], F, -g[1], g[1])):
        quads.append(Quad(np.array([x0, y0, 0.0]), np.array([x1 - x0, 0, 0.0]), np.array([0, y1 - y0, 0.0]), ground, "far"))
    all_boxes = boxes + walls
    pts = np.concatenate([b.corners() for b in all_boxes] + [np.array([[-half[0], -half[1], 0], [half[0], half[1], 0]])])
    bounds = np.stack([pts.min(0), pts.max(0)])
    focus = np.array([0.0, 0.0, min(1.2, 0.4 * bounds[1, 2])])
    jobs, tpm = _texture_jobs(quads, rng, conf)
    elev, azim = np.radians(rng.uniform(30, 70)), rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    horizon = np.clip(np.array([0.80, 0.85, 0.92]) + rng.normal(0, 0.04, 3), 0, 1)
    zenith = np.clip(np.array([0.35, 0.55, 0.85]) + rng.normal(0, 0.05, 3), 0, 1)
    return Scene(quads, jobs, tpm, all_boxes, bounds, focus, style, family, light,
                 ambient=float(rng.uniform(0.35, 0.5)), diffuse=float(rng.uniform(0.5, 0.7)),
                 sky=(horizon, zenith), free_half=free_half, meta=dict(size=size, n_boxes=len(boxes), n_walls=len(walls)))


def _texture_jobs(quads: List[Quad], rng: np.random.Generator, conf: dict):
    """Texture size and seed per quad at a common texel density, capped by ``max_texture_px``."""
    jobs, tpm_out = [], []
    for q in quads:
        L1, L2 = np.linalg.norm(q.e1), np.linalg.norm(q.e2)
        tpm = conf["texels_per_m"] * (conf["far_texel_factor"] if q.role == "far" else 1.0)
        tpm = min(tpm, conf["max_texture_px"] / max(L1, L2))
        w, h = max(8, int(round(L1 * tpm))), max(8, int(round(L2 * tpm)))
        # The gain is a mild per-face albedo change so that faces sharing a kind still differ.
        jobs.append(dict(kind=q.kind, width=w, height=h, tpm=tpm, seed=int(rng.integers(2 ** 63)),
                         gain=float(rng.uniform(0.85, 1.1))))
        tpm_out.append(np.sqrt((w / L1) * (h / L2)))
    return jobs, np.asarray(tpm_out)
