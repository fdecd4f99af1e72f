"""Configuration, scene specs and in-memory rendering of synthetic scenes (for tests and training)."""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import yaml

from .cameras import PATHS, sample_cameras
from memposer.config import config_dir

from .render import make_casters, render_view
from .scene import STYLES, build_scene
from .textures import FAMILIES

log = logging.getLogger(__name__)

PRESETS_DIR = config_dir() / "synthetic"

default_conf: Dict[str, Any] = {
    # images
    "long_side": 384,  # pixels of the longer image side
    "aspect": 4 / 3,
    "p_portrait": 0.15,  # share of scenes shot in portrait orientation
    "supersample": 1,  # rays per pixel side (2 = 4x anti-aliasing)
    "shadows": True,
    "photometric": 0.08,  # per-image exposure / white-balance jitter
    "noise": 1.5,  # sensor noise std in grey levels
    # scenes (metres)
    "styles": list(STYLES),
    "families": sorted(FAMILIES),
    "paths": list(PATHS),
    "scene_size": [6.0, 14.0],
    "ground_margin": 3.0,
    "far_ground": 4.0,  # far ground reaches this many scene sizes
    "texels_per_m": 64.0,
    "far_texel_factor": 0.25,
    "max_texture_px": 1536,
    # cameras
    "focal_range": [0.7, 1.3],  # focal length in units of the long side, drawn per scene
    "focal_jitter": 0.04,  # relative per-image change of the focal length
    "roll_std_deg": 3.0,  # camera roll about the optical axis
    "max_sky_fraction": 0.45,
    "min_view_depth": 1.5,
    "max_path_attempts": 4,
    # competition layout
    "datasets": 3,
    "scenes_per_dataset": [2, 3],
    "images_per_scene": [8, 14],
    "outliers_per_dataset": [1, 3],
    "p_lookalike": 0.75,  # chance that a further scene copies the dataset's style and family
    "thresholds": [0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0],  # IMC2025's list, metres
    "threshold_reference_extent": 10.0,  # thresholds scale by extent / this; null keeps them as is
    "test": {"datasets": 2},  # overrides for the test split
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if k not in base and k != "preset":
            log.warning("unknown synthetic-data option %r (ignored by the generator)", k)
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def available_presets() -> list:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_conf(conf: Optional[dict | str] = None, **overrides) -> dict:
    """``default_conf`` merged with a preset (name or YAML path) or a dict, then with ``overrides``."""
    if conf is None:
        conf = {}
    if isinstance(conf, (str, Path)):
        path = Path(conf)
        if not path.suffix:
            path = PRESETS_DIR / f"{conf}.yaml"
        if not path.is_file():
            raise ValueError(f"synthetic preset {str(conf)!r} not found; presets: {available_presets()} in {PRESETS_DIR}")
        conf = yaml.safe_load(path.read_text()) or {}
    return _merge(_merge(default_conf, conf), overrides)


def image_size(conf: dict, rng: np.random.Generator) -> tuple:
    """(width, height) of a scene's images: landscape, sometimes portrait."""
    long, short = int(conf["long_side"]), int(round(conf["long_side"] / conf["aspect"]))
    return (short, long) if rng.random() < conf["p_portrait"] else (long, short)


def random_scene_spec(conf: dict, rng: np.random.Generator, style: Optional[str] = None,
                      family: Optional[str] = None, n_images: Optional[int] = None) -> dict:
    """A random scene description for :func:`render_scene`."""
    w, h = image_size(conf, rng)
    return dict(
        style=style or str(rng.choice(conf["styles"])),
        family=family or str(rng.choice(conf["families"])),
        path=str(rng.choice(conf["paths"])),
        n_images=int(n_images if n_images is not None else rng.integers(conf["images_per_scene"][0], conf["images_per_scene"][1] + 1)),
        width=w, height=h,
    )


def scene_thresholds(extent: float, conf: dict) -> list:
    """Registration thresholds of a scene (metres), scaled to its size like the competition's."""
    ref = conf.get("threshold_reference_extent")
    scale = 1.0 if not ref else extent / float(ref)
    return [float(f"{th * scale:.4g}") for th in conf["thresholds"]]


def render_scene(spec: dict, rng: np.random.Generator, conf: Optional[dict] = None,
                 return_depth: bool = False) -> Dict[str, Any]:
    """Build and render one scene.

    Args:
        spec: ``style``, ``family``, ``path``, ``n_images``, ``width``, ``height`` (see :func:`random_scene_spec`).
        rng: the only source of randomness (same rng state -> identical output).
    Returns:
        ``images`` uint8 (N, H, W, 3), ``K`` (N, 3, 3), ``R`` (N, 3, 3), ``t`` (N, 3) world-to-camera,
        OpenCV axes, metres; ``extent`` (m), ``thresholds`` (m), ``spec``; ``depth`` (N, H, W) z-depth
        (inf for sky) when ``return_depth``; ``scene`` (the :class:`Scene`).
    """
    conf = load_conf(conf) if not isinstance(conf, dict) or "long_side" not in conf else conf
    scene = build_scene(rng, spec["style"], spec["family"], conf)
    casters = make_casters(scene)
    cams = sample_cameras(scene, int(spec["n_images"]), spec["path"], int(spec["width"]), int(spec["height"]),
                          rng, conf, casters["all"])
    images, depths = [], []
    for K, R, t in zip(cams["K"], cams["R"], cams["t"]):
        out = render_view(scene, K, R, t, int(spec["width"]), int(spec["height"]), conf, rng, casters)
        images.append(out["image"])
        depths.append(out["depth"])
    res = dict(images=np.stack(images), K=cams["K"], R=cams["R"], t=cams["t"], extent=scene.extent,
               thresholds=scene_thresholds(scene.extent, conf), spec=dict(spec), scene=scene)
    if return_depth:
        res["depth"] = np.stack(depths)
    return res
