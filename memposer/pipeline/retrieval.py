"""Stage 2: one global descriptor per image, for pair shortlisting and clustering.

Methods (``method``, and optionally a second one in ``fuse``):

- ``dinov2``: DINOv2 tokens (class token + GeM of patch tokens) from a backbone whose weights the user
  names (``weights:``; see ``memposer.models.backbone`` for the formats). Without weights a random
  DINOv2 is useless for retrieval, so the stage says so once and uses ``vlad`` instead;
- ``vlad``: VLAD over the local features already extracted, with a codebook k-means-fitted on the
  dataset itself, or the one in ``pca`` (fitted on a train split); needs no download;
- ``thumb``: colour layout + colour histogram (``describers.ThumbDescriber``), no weights.

``fuse`` mixes a second method in: the cosine similarity of the fused descriptors is
``(1 - fuse_weight)`` x the first method's + ``fuse_weight`` x the second's. ``union`` instead adds
each image's ``pairs.union_k`` nearest neighbours by another method to the pairs. ``pca`` names an ``.npz``
that ``python -m memposer.pipeline.retrieval_fit`` fitted on a train split: one whitening PCA per
method (and VLAD's codebook), applied instead of anything fitted on the images being matched.
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional

import h5py
import numpy as np

from memposer.pipeline.describers import DESCRIBERS, Describers, l2
from memposer.pipeline.features import FeatureCache

log = logging.getLogger(__name__)

METHODS = ("dinov2", "vlad", "thumb")
default_conf = {
    "method": "dinov2",  # dinov2 | vlad | thumb
    "fuse": None,  # a second method mixed into the similarity (None: off)
    "fuse_weight": 0.2,  # the second method's share of the cosine similarity
    "union": None,  # a method whose own nearest neighbours are matched too (pairs.union_k of them)
    "pca": None,  # .npz from retrieval_fit (a train split): per-method whitening PCA + VLAD codebook;
    # a relative path is looked up as given, then under configs/ (e.g. retrieval/aliked-synthetic.npz)
    "pca_whiten": 1.0,  # exponent of the whitening: 1 full, 0 projection only
    "backbone": "vit_small_patch14_dinov2",
    "weights": None,  # DINOv2 weights file/folder; None -> vlad fallback
    "resize": 448,  # DINOv2 input side (multiple of 14)
    "vlad_words": 32,
    "vlad_sample": 200,  # descriptors per image sampled for the codebook
    "kmeans_iters": 15,
    "thumb_side": 16,  # thumb: the colour layout's side in pixels
    "thumb_bins": [8, 4, 4],  # thumb: HSV histogram bins
    "seed": 0,
    "device": "auto",
}


def kmeans(x: np.ndarray, k: int, iters: int, seed: int) -> np.ndarray:
    """Spherical k-means (cosine), deterministic by seed; returns (k, D) unit centres."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    centres = x[rng.choice(len(x), k, replace=False)]
    for _ in range(iters):
        assign = np.argmax(x @ centres.T, 1)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        empty = np.linalg.norm(sums, axis=1) < 1e-9
        sums[empty] = x[rng.choice(len(x), int(empty.sum()))]  # re-seed dead words
        centres = l2(sums)
    return centres


def vlad(desc: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """VLAD: residuals to the nearest word summed per word, intra- and power-normalised."""
    assign = np.argmax(desc @ centres.T, 1)
    v = np.zeros_like(centres)
    np.add.at(v, assign, desc - centres[assign])
    v = l2(v)  # intra-normalisation: no single bursty word dominates
    v = v.reshape(-1)
    v = np.sign(v) * np.sqrt(np.abs(v))
    return l2(v)


def descriptor_sample(names: List[str], feature_path: Path, conf: dict) -> np.ndarray:
    """Up to ``vlad_sample`` local descriptors of each of ``names``, drawn by ``seed``."""
    rng = np.random.default_rng(conf["seed"])
    with FeatureCache(feature_path, capacity=0) as cache:
        sample = []
        for n in names:
            d = cache[n]["descriptors"].astype(np.float32)
            sample.append(d[rng.choice(len(d), min(len(d), conf["vlad_sample"]), replace=False)])
    return np.concatenate(sample)


def vlad_codebook(names: List[str], feature_path: Path, conf: dict) -> np.ndarray:
    """A codebook k-means-fitted on a sample of ``names``' local descriptors."""
    return kmeans(l2(descriptor_sample(names, feature_path, conf)), conf["vlad_words"], conf["kmeans_iters"], conf["seed"])


def vlad_descriptors(names: List[str], feature_path: Path, conf: dict,
                     codebook: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, words x D) VLAD of ``names``; the codebook is fitted on them unless one is given."""
    centres = vlad_codebook(names, feature_path, conf) if codebook is None else codebook
    with FeatureCache(feature_path, capacity=0) as cache:
        out = [vlad(l2(cache[n]["descriptors"].astype(np.float32)), centres) for n in names]
    return np.stack(out).astype(np.float32)


class Whitening:
    """The per-method PCA (+ VLAD codebook) of a ``retrieval_fit`` file; loads no code (npz arrays)."""

    def __init__(self, path: Path | str):
        with np.load(path, allow_pickle=False) as z:
            self.arrays = {k: z[k].astype(np.float32) for k in z.files if k != "meta"}
            self.meta = json.loads(str(z["meta"]))
        self.path = Path(path)

    def has(self, method: str) -> bool:
        return f"{method}_components" in self.arrays

    @property
    def codebook(self) -> Optional[np.ndarray]:
        return self.arrays.get("vlad_codebook")

    def apply(self, method: str, desc: np.ndarray, whiten: float) -> np.ndarray:
        """Unit descriptors projected on the method's components, scaled by variance ** (-whiten / 2)."""
        mean, comp, var = (self.arrays[f"{method}_{k}"] for k in ("mean", "components", "variance"))
        if desc.shape[1] != mean.shape[0]:
            raise ValueError(f"retrieval.pca {self.path}: {method} descriptors have {desc.shape[1]} dimensions, "
                             f"the file was fitted on {mean.shape[0]} ({self.meta.get('settings')})")
        return l2(((desc - mean) @ comp.T) * np.maximum(var, 1e-12) ** (-0.5 * whiten)).astype(np.float32)


def find_whitening(path: str) -> Path:
    """``path`` as given, else under ``configs/`` (where the shipped files live: ``retrieval/<name>.npz``)."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    from memposer.config import config_dir  # noqa: PLC0415

    return config_dir() / p if (config_dir() / p).is_file() else p


@lru_cache(maxsize=4)
def load_whitening(path: str) -> Whitening:
    return Whitening(find_whitening(path))


DESCRIPTOR_KEYS = ("method", "fuse")  # the methods of the main descriptor
PIXEL_KEYS = ("method", "fuse", "union")  # every method the features stage may feed pixels to


def methods(conf: dict, keys=DESCRIPTOR_KEYS) -> List[str]:
    """The methods ``conf`` runs for ``keys``, in order, after the weight-less fallback (``dinov2`` -> ``vlad``)."""
    out: List[str] = []
    for m in (conf.get(k) for k in keys):
        if m is None:
            continue
        if m not in METHODS:
            raise ValueError(f"unknown retrieval method {m!r} ({'|'.join(METHODS)})")
        if m == "dinov2" and not conf["weights"]:
            _warn_no_weights()
            m = "vlad"
        if m not in out:
            out.append(m)
    return out


def pixel_descriptors(conf: Optional[dict] = None, progress: bool = True) -> Optional[Describers]:
    """The describers that need the images' pixels (DINOv2 with weights, thumb), or None."""
    conf = {**default_conf, **(conf or {})}
    parts = {m: DESCRIBERS[m](conf, progress) for m in methods(conf, PIXEL_KEYS) if m in DESCRIBERS}
    return Describers(parts) if parts else None


def union_descriptors(image_dir: Path | str, names: List[str], feature_path: Path | str,
                      conf: Optional[dict] = None, progress: bool = True,
                      describer: Optional[Describers] = None) -> Optional[np.ndarray]:
    """The ``union`` method's descriptors (its neighbours are matched too: ``pairs.union_k``), or None."""
    conf = {**default_conf, **(conf or {})}
    if not conf["union"]:
        return None
    return global_descriptors(image_dir, names, feature_path, {**conf, "method": conf["union"], "fuse": None},
                              progress, describer)


def _turns(feature_path: Path, names: List[str]) -> Dict[str, int]:
    """The quarter turns the features stage extracted each image in (pixels are described alike)."""
    if not Path(feature_path).is_file():  # pixel methods alone need no local features
        return {}
    with h5py.File(feature_path, "r") as f:
        return {n: int(f[n].attrs.get("turn", 0)) for n in names if n in f}


def global_descriptors(image_dir: Path | str, names: List[str], feature_path: Path | str,
                       conf: Optional[dict] = None, progress: bool = True,
                       describer: Optional[Describers] = None) -> np.ndarray:
    """(N, D) unit descriptors of ``names`` (all must have features in ``feature_path``);
    ``describer``: the :func:`pixel_descriptors` the features stage already fed, if any."""
    conf = {**default_conf, **(conf or {})}
    if not names:
        return np.zeros((0, 1), np.float32)
    ms = methods(conf)
    white = load_whitening(str(conf["pca"])) if conf["pca"] else None
    parts = []
    for m in ms:
        if m == "vlad":
            d = vlad_descriptors(names, Path(feature_path), conf, white.codebook if white else None)
        else:
            pix = describer.parts.get(m) if describer else None
            pix = pix or DESCRIBERS[m](conf, progress)
            d = pix.describe(Path(image_dir), names, _turns(Path(feature_path), names))
        if white is not None and white.has(m):
            d = white.apply(m, d, float(conf["pca_whiten"]))
        parts.append(d)
    if len(parts) == 1:
        return parts[0]
    w = float(conf["fuse_weight"])
    return np.concatenate([np.sqrt(1 - w) * parts[0], np.sqrt(w) * parts[1]], 1).astype(np.float32)


_warned = False


def _warn_no_weights() -> None:
    global _warned
    if not _warned:
        log.warning("retrieval: no DINOv2 weights given (--dinov2 PATH or retrieval.weights); "
                    "using VLAD over local features instead")
        _warned = True
