"""Procedural textures for synthetic scenes: noise, blobs, text, bricks, paving, planks, posters.

Textures are float32 ``(h, w, 3)`` images in ``[0, 1]`` sized in *texels*; sizes of the drawn
elements are given in metres and converted with ``texels_per_m`` so every surface of a scene has the
same physical level of detail. All randomness comes from the ``rng`` argument (deterministic).
Each texture mixes several scales (large blobs down to fine grain) so that SIFT and ALIKED find
keypoints at any viewing distance.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Texture families: a palette and which texture kinds go where. Scenes of one family look alike.
FAMILIES: Dict[str, dict] = {
    "sandstone": dict(palette=[(0.85, 0.74, 0.55), (0.72, 0.52, 0.33), (0.55, 0.36, 0.22), (0.93, 0.88, 0.76), (0.40, 0.45, 0.55)],
                      ground=["paving", "noise"], wall=["bricks", "posters"], box=["blobs", "bricks", "text"]),
    "urban": dict(palette=[(0.55, 0.56, 0.58), (0.30, 0.32, 0.36), (0.80, 0.20, 0.15), (0.20, 0.35, 0.65), (0.92, 0.92, 0.88)],
                  ground=["noise", "paving"], wall=["posters", "text", "bricks"], box=["posters", "text", "blobs"]),
    "garden": dict(palette=[(0.30, 0.50, 0.22), (0.45, 0.35, 0.20), (0.70, 0.75, 0.40), (0.85, 0.80, 0.65), (0.60, 0.25, 0.30)],
                   ground=["blobs", "noise"], wall=["planks", "bricks"], box=["planks", "blobs"]),
    "harbor": dict(palette=[(0.20, 0.35, 0.55), (0.85, 0.85, 0.82), (0.65, 0.30, 0.15), (0.35, 0.35, 0.30), (0.95, 0.75, 0.20)],
                   ground=["planks", "paving"], wall=["planks", "posters"], box=["text", "blobs", "planks"]),
    "museum": dict(palette=[(0.90, 0.88, 0.84), (0.25, 0.22, 0.20), (0.60, 0.15, 0.20), (0.75, 0.65, 0.40), (0.30, 0.40, 0.35)],
                   ground=["paving", "planks"], wall=["posters", "text"], box=["blobs", "posters", "bricks"]),
}


def _palette(family: dict, rng: np.random.Generator, n: int = 4) -> np.ndarray:
    """A few colours jittered from the family palette."""
    base = np.asarray(family["palette"], dtype=np.float32)
    cols = base[rng.integers(0, len(base), size=n)] + rng.normal(0, 0.06, size=(n, 3)).astype(np.float32)
    return np.clip(cols, 0.03, 0.97)


def fbm(h: int, w: int, rng: np.random.Generator, cell: float, octaves: int = 4) -> np.ndarray:
    """Fractal value noise in ``[0, 1]``; ``cell`` is the largest feature size in texels."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh, gw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
        grid = rng.random((gh, gw), dtype=np.float32)
        # Upsample the lattice of random values: bicubic resize is smooth value noise.
        big = Image.fromarray(grid, mode="F").resize((int(gw * cell), int(gh * cell)), Image.BICUBIC)
        out += amp * np.asarray(big, dtype=np.float32)[:h, :w]
        total += amp
        amp *= 0.55
        cell = max(cell / 2.0, 1.5)
    out /= total
    lo, hi = np.percentile(out, [1, 99])
    return np.clip((out - lo) / max(hi - lo, 1e-6), 0, 1)


def _ramp(x: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Map a scalar field in [0, 1] through a colour ramp."""
    xp = np.linspace(0, 1, len(cols))
    return np.stack([np.interp(x, xp, cols[:, c]).astype(np.float32) for c in range(3)], -1)


def _to_img(a: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8), "RGB")


def _col(c) -> tuple:
    return tuple(int(min(max(v, 0.0), 1.0) * 255) for v in c)


@functools.lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _count(density: float, w: int, h: int, tpm: float, r_min: float) -> int:
    """Shapes for ``density`` per square metre, capped where shapes would shrink below ~2 texels."""
    n = density * w * h / tpm ** 2
    return int(min(n, w * h / 64.0 if r_min * tpm < 2 else n)) + 1


def _blobs(img: Image.Image, rng: np.random.Generator, cols: np.ndarray, tpm: float, density: float,
           r_range=(0.05, 0.6)) -> None:
    """Ellipses, polygons, rings and plates of random colours, sizes log-uniform in metres."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    n = _count(density, w, h, tpm, r_range[0])
    # All parameters drawn at once (fast); shapes smaller than a texel are skipped.
    r = np.exp(rng.uniform(np.log(r_range[0]), np.log(r_range[1]), n)) * tpm
    xy = rng.uniform(0, 1, (n, 2)) * [w, h]
    fill = (cols[rng.integers(len(cols), size=n)] * rng.uniform(0.6, 1.2, (n, 1))).tolist()
    edge = (cols[rng.integers(len(cols), size=n)] * 0.5).tolist()
    kind = rng.integers(4, size=n)
    ecc = rng.uniform(0.4, 1.0, n)
    poly = rng.uniform(0, 1, (n, 6, 2))
    nv = rng.integers(3, 7, size=n)
    for i in np.nonzero(r >= 1.0)[0]:
        x, y, ri, c = xy[i, 0], xy[i, 1], r[i], _col(fill[i])
        if kind[i] == 0:
            d.ellipse([x - ri, y - ri * ecc[i], x + ri, y + ri * ecc[i]], fill=c)
        elif kind[i] == 1:
            ang = np.sort(poly[i, :nv[i], 0] * 2 * np.pi)
            rad = ri * (0.5 + 0.5 * poly[i, :nv[i], 1])
            d.polygon(list(zip((x + rad * np.cos(ang)).tolist(), (y + rad * np.sin(ang)).tolist())), fill=c)
        elif kind[i] == 2:
            d.ellipse([x - ri, y - ri, x + ri, y + ri], outline=c, width=max(1, int(ri * 0.25)))
        else:
            d.rectangle([x - ri, y - ri * 0.6, x + ri, y + ri * 0.6], fill=c, outline=_col(edge[i]), width=max(1, int(ri * 0.1)))


_GLYPHS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789#&@%"


def _text(img: Image.Image, rng: np.random.Generator, cols: np.ndarray, tpm: float, density: float) -> None:
    """Lines of random letters (signs, graffiti): high-contrast corners at small scales."""
    w, h = img.size
    d = ImageDraw.Draw(img)
    n = _count(density, w, h, tpm, 0.06)
    for _ in range(n):
        size = max(6, int(np.exp(rng.uniform(np.log(0.06), np.log(0.35))) * tpm))
        font = _font(int(size))
        word = "".join(rng.choice(list(_GLYPHS), size=int(rng.integers(2, 9))))
        x, y = rng.uniform(-0.1 * w, w), rng.uniform(0, h)
        bg = cols[rng.integers(len(cols))]
        fg = 1.0 - bg if rng.random() < 0.7 else cols[rng.integers(len(cols))] * 0.3
        if rng.random() < 0.5:  # a plate behind the word
            bb = d.textbbox((x, y), word, font=font)
            pad = size * 0.25
            d.rectangle([bb[0] - pad, bb[1] - pad, bb[2] + pad, bb[3] + pad], fill=_col(bg))
        d.text((x, y), word, fill=_col(fg), font=font)


def _bricks(h: int, w: int, rng: np.random.Generator, cols: np.ndarray, tpm: float) -> np.ndarray:
    bh = max(4, int(rng.uniform(0.12, 0.3) * tpm))
    bw = max(8, int(bh * rng.uniform(1.8, 3.2)))
    mortar = max(1, int(bh * 0.15))
    img = Image.new("RGB", (w, h), _col(cols[0] * 0.8 + 0.2))
    d = ImageDraw.Draw(img)
    rows = list(range(0, h, bh))
    offs = rng.integers(0, bw // 4 + 1, len(rows))
    per_row = (w + 2 * bw) // bw + 1
    fills = (cols[rng.integers(1, len(cols), (len(rows), per_row))] * rng.uniform(0.6, 1.25, (len(rows), per_row, 1))).tolist()
    for row, y in enumerate(rows):
        off = (row % 2) * bw // 2 + int(offs[row])
        for i, x in enumerate(range(-bw + off, w, bw)):
            d.rectangle([x + mortar, y + mortar, x + bw - 1, y + bh - 1], fill=_col(fills[row][i]))
    return np.asarray(img, np.float32) / 255


def _paving(h: int, w: int, rng: np.random.Generator, cols: np.ndarray, tpm: float) -> np.ndarray:
    """Irregular stones: jittered grid of quadrilaterals with gaps."""
    s = max(6, int(rng.uniform(0.25, 0.6) * tpm))
    img = Image.new("RGB", (w, h), _col(cols[0] * 0.45))
    d = ImageDraw.Draw(img)
    gap = max(1, s // 10)
    ys, xs = list(range(-s, h + s, s)), list(range(-s, w + s, s))
    n = len(ys) * len(xs)
    jit = (rng.uniform(-0.2, 0.2, size=(n, 4, 2)) * s + np.array([[gap, gap], [s - gap, gap], [s - gap, s - gap], [gap, s - gap]])).tolist()
    fills = (cols[rng.integers(1, len(cols), n)] * rng.uniform(0.55, 1.2, (n, 1))).tolist()
    i = 0
    for y in ys:
        for x in xs:
            d.polygon([(x + a, y + b) for a, b in jit[i]], fill=_col(fills[i]))
            i += 1
    return np.asarray(img, np.float32) / 255


def _planks(h: int, w: int, rng: np.random.Generator, cols: np.ndarray, tpm: float) -> np.ndarray:
    pw = max(5, int(rng.uniform(0.12, 0.3) * tpm))
    out = np.empty((h, w, 3), np.float32)
    grain = fbm(h, w, rng, cell=max(4.0, 0.08 * tpm), octaves=3)
    for i, y in enumerate(range(0, h, pw)):
        c = cols[rng.integers(len(cols))] * rng.uniform(0.6, 1.15)
        out[y:y + pw] = c
        out[y:y + max(1, pw // 8)] *= 0.35  # dark seam between planks
    out *= (0.75 + 0.5 * grain)[..., None]
    img = _to_img(out)
    d = ImageDraw.Draw(img)
    for _ in range(int(0.6 * w * h / tpm ** 2) + 1):  # knots and nails
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.01, 0.05) * tpm
        d.ellipse([x - r, y - r, x + r, y + r], fill=_col(cols[0] * 0.3))
    return np.asarray(img, np.float32) / 255


def make_texture(kind: str, width: int, height: int, family: dict, rng: np.random.Generator,
                 texels_per_m: float) -> np.ndarray:
    """Texture of one ``kind`` in a family's colours: float32 ``(height, width, 3)`` in [0, 1]."""
    h, w, tpm = int(height), int(width), float(texels_per_m)
    cols = _palette(family, rng, 5)
    if kind == "bricks":
        base = _bricks(h, w, rng, cols, tpm)
    elif kind == "paving":
        base = _paving(h, w, rng, cols, tpm)
    elif kind == "planks":
        base = _planks(h, w, rng, cols, tpm)
    else:  # noise-based backgrounds with drawn content on top
        field = fbm(h, w, rng, cell=max(4.0, rng.uniform(0.4, 1.2) * tpm), octaves=5)
        base = _ramp(field, cols[:3]).astype(np.float32)
    img = _to_img(base)
    if kind in ("blobs", "noise"):
        _blobs(img, rng, cols, tpm, density=2.0 if kind == "blobs" else 0.6)
    if kind == "posters":
        _blobs(img, rng, cols, tpm, density=0.8, r_range=(0.1, 0.8))
        _text(img, rng, cols, tpm, density=1.0)
    if kind == "text":
        _text(img, rng, cols, tpm, density=2.5)
    if kind in ("bricks", "paving", "planks"):
        _blobs(img, rng, cols, tpm, density=0.25, r_range=(0.03, 0.25))  # stains, chips, signs
        _text(img, rng, cols, tpm, density=0.15)
    tex = np.asarray(img, np.float32) / 255
    # Fine grain everywhere: repeatable corners at the smallest scales.
    grain = fbm(h, w, rng, cell=max(2.0, 0.05 * tpm), octaves=2)
    tex = tex * (0.82 + 0.36 * grain[..., None])
    return np.clip(tex, 0, 1).astype(np.float32)


def mip_pyramid(tex: np.ndarray, min_size: int = 4) -> List[np.ndarray]:
    """Box-filtered mip levels (level 0 = full resolution) for anti-aliased sampling."""
    levels = [tex]
    while min(levels[-1].shape[:2]) >= 2 * min_size:
        t = levels[-1]
        h, w = (t.shape[0] // 2) * 2, (t.shape[1] // 2) * 2
        t = t[:h, :w]
        levels.append(0.25 * (t[0::2, 0::2] + t[1::2, 0::2] + t[0::2, 1::2] + t[1::2, 1::2]))
    return levels


TEXTURE_KINDS: Sequence[str] = ("noise", "blobs", "text", "bricks", "paving", "planks", "posters")
