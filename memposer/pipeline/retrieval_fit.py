"""Fit retrieval's whitening on a train split: one PCA per descriptor method and VLAD's codebook.

    python -m memposer.pipeline.retrieval_fit --data DATA/train --out configs/retrieval/NAME.npz \\
        [--config cpu] [--methods vlad,thumb] [--dim 128] [section.key=value ...]

The file is what ``retrieval.pca`` names: fitted once on images that are not the ones being matched
(the seed notes' idea: a PCA per feature type fitted on the train split, not ad hoc on the test set).
Local features are extracted with the config's settings into ``--work`` (reused when present); the
file records those settings, and the pipeline refuses it with other features.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from memposer.data.imc import scan_dataset_folder
from memposer.pipeline import features, retrieval
from memposer.pipeline.describers import DESCRIBERS, l2

log = logging.getLogger(__name__)


def pca(x: np.ndarray, dim: int) -> Dict[str, np.ndarray]:
    """Mean, the top ``dim`` principal directions (rows) and their variances of the rows of ``x``."""
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    k = min(dim, len(s))
    return {"mean": mean, "components": vt[:k], "variance": s[:k] ** 2 / max(len(x) - 1, 1)}


def describe_split(data: Path, work: Path, conf: dict, methods: List[str], progress: bool = True
                   ) -> Dict[str, np.ndarray]:
    """Raw (unwhitened) descriptors of every image of ``data``'s datasets, per method; VLAD with one
    codebook fitted on all of them (returned as ``vlad_codebook``)."""
    rconf = {**retrieval.default_conf, **conf["retrieval"], "pca": None}
    per_ds = []
    for ds, names in sorted(scan_dataset_folder(data).items()):
        feat = work / ds / "features.h5"
        status = features.extract_features(data / ds, names, feat, conf["features"], progress)
        per_ds.append((ds, [n for n in names if status.get(n)], feat))
    out: Dict[str, np.ndarray] = {}
    if "vlad" in methods:
        samples = [retrieval.descriptor_sample(names, feat, rconf) for _, names, feat in per_ds]
        book = retrieval.kmeans(l2(np.concatenate(samples)), rconf["vlad_words"], rconf["kmeans_iters"],
                                rconf["seed"])
        out["vlad_codebook"] = book
        out["vlad"] = np.concatenate([retrieval.vlad_descriptors(names, feat, rconf, book) for _, names, feat in per_ds])
    for m in methods:
        if m == "vlad":
            continue
        # one describer per dataset: it keeps descriptors by file name, and names repeat across datasets
        out[m] = np.concatenate([DESCRIBERS[m](rconf, progress).describe(data / ds, names, retrieval._turns(feat, names))
                                 for ds, names, feat in per_ds])
    return out


def fit(data: Path, out: Path, conf: dict, methods: List[str], dim: int, work: Path, progress: bool = True) -> dict:
    """Fit and write the file; returns its metadata."""
    raw = describe_split(data, work, conf, methods, progress)
    arrays: Dict[str, np.ndarray] = {}
    if "vlad_codebook" in raw:
        arrays["vlad_codebook"] = raw["vlad_codebook"].astype(np.float16)
    n = 0
    for m in methods:
        fitted = pca(raw[m].astype(np.float64), dim)
        n = len(raw[m])
        for k, v in fitted.items():
            arrays[f"{m}_{k}"] = v.astype(np.float16 if k == "components" else np.float32)
    r = conf["retrieval"]
    meta = {"methods": methods, "dim": dim, "images": n, "data": str(data),
            "settings": {"extractor": conf["features"]["extractor"], "model_name": conf["features"].get("model_name"),
                         "max_num_keypoints": conf["features"]["max_num_keypoints"],
                         "resize_max": conf["features"]["resize_max"], "vlad_words": r.get("vlad_words"),
                         "thumb_side": r.get("thumb_side"), "thumb_bins": r.get("thumb_bins")}}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
    log.info("retrieval_fit: %s (%s, %d images, %d dimensions) -> %s", ", ".join(methods), data, n, dim, out)
    return meta


def main(argv: Optional[List[str]] = None) -> int:
    from memposer.pipeline.cli import load_infer_config  # noqa: PLC0415 (pulls in the whole pipeline)

    p = argparse.ArgumentParser(prog="python -m memposer.pipeline.retrieval_fit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="a train split: one folder of images per dataset")
    p.add_argument("--out", type=Path, required=True, help="the .npz to write (retrieval.pca)")
    p.add_argument("--config", default="default", help="infer preset whose features are described")
    p.add_argument("--methods", default="vlad,thumb")
    p.add_argument("--dim", type=int, default=128, help="principal components kept per method")
    p.add_argument("--work", type=Path, help="feature caches (default: <out>.work)")
    a, overrides = p.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    conf = load_infer_config(a.config, overrides)
    methods = a.methods.split(",")
    bad = [m for m in methods if m not in ("vlad", "thumb", "dinov2")]
    if bad or ("dinov2" in methods and not conf["retrieval"]["weights"]):
        p.error(f"--methods: {bad or 'dinov2'} not available (vlad, thumb; dinov2 with retrieval.weights=PATH)")
    if not scan_dataset_folder(a.data):
        p.error(f"--data {a.data}: no dataset folders with images")
    fit(a.data, a.out, conf, methods, a.dim, a.work or a.out.with_suffix(".work"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
