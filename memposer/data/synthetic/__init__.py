"""Synthetic IMC2025-style data with exact poses: textured 3D scenes rendered by ray casting.

In memory: ``render_scene(random_scene_spec(conf, rng), rng, conf)`` returns images, ``K``, ``R``, ``t``.
On disk, in the competition layout: ``generate_competition(out_dir, "demo", seed=0)`` or
``python -m memposer.data.synthetic --out DIR --preset demo --seed 0``.
"""
from .competition import generate_competition, plan_dataset  # noqa: F401
from .generate import (available_presets, default_conf, load_conf, random_scene_spec,  # noqa: F401
                       render_scene, scene_thresholds)
