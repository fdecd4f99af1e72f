"""Global descriptors computed from an image's pixels (retrieval's ``dinov2`` and ``thumb`` methods).

A describer gets each image the features stage decodes (:meth:`PixelDescriber.add`), so an image is
decoded once per run for both stages; :meth:`PixelDescriber.describe` decodes only the images it was
not given (features cached by an earlier run), turned by the quarter turns the features stage chose.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from memposer.pipeline import images as images_mod
from memposer.pipeline.features import pick_device


def l2(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class PixelDescriber:
    """Descriptors by image name, computed from decoded images as they come."""

    def __init__(self, conf: dict, progress: bool = True):
        self.conf, self.progress = conf, progress
        self.desc: Dict[str, np.ndarray] = {}
        self.seconds = 0.0  # spent describing, wherever called from (the run's timing table)

    def add(self, dec: images_mod.DecodedImage) -> None:
        """Describe one decoded, upright image."""
        t0 = time.perf_counter()
        vec = self._describe(dec)
        if vec is not None:
            self.desc[dec.path.name] = vec
        self.seconds += time.perf_counter() - t0

    def _describe(self, dec: images_mod.DecodedImage) -> Optional[np.ndarray]:
        raise NotImplementedError

    def describe(self, image_dir: Path, names: List[str], turns: Optional[Dict[str, int]] = None) -> np.ndarray:
        """(N, D) unit descriptors of ``names``, decoding (and turning by ``turns``, quarter turns
        counter-clockwise) the images :meth:`add` was not given."""
        todo = [n for n in names if n not in self.desc]
        for name in tqdm(todo, desc="global descriptors", disable=not self.progress or not todo, leave=False):
            dec = images_mod.decode_image(Path(image_dir) / name)
            k = (turns or {}).get(name, 0)
            if dec is not None:
                self.add(dec if not k else images_mod.DecodedImage(dec.path, dec.image.rotate(90 * k, expand=True),
                                                                   dec.focal))
        missing = [n for n in names if n not in self.desc]
        if missing:
            raise ValueError(f"retrieval: {len(missing)} image(s) could not be read again, e.g. {missing[0]}")
        return l2(np.stack([self.desc[n] for n in names])).astype(np.float32)


class DinoDescriber(PixelDescriber):
    """DINOv2 class token + GeM of the patch tokens, from the user's weights (``conf['weights']``)."""

    def __init__(self, conf: dict, progress: bool = True):
        super().__init__(conf, progress)
        self.side = int(conf["resize"]) // 14 * 14
        self.model: Optional[torch.nn.Module] = None
        self.device = pick_device(conf["device"])

    @torch.no_grad()
    def _describe(self, dec: images_mod.DecodedImage) -> Optional[np.ndarray]:
        img = images_mod.prepare_image(dec, {"resize_max": None})
        if img is None:
            return None
        if self.model is None:
            from memposer.models.backbone import build_backbone  # noqa: PLC0415 (timm import is slow)
            self.model = build_backbone(self.conf["backbone"], self.conf["weights"]).eval().to(self.device)
        x = images_mod.to_tensor(img).to(self.device)
        x = torch.nn.functional.interpolate(x, size=(self.side, self.side), mode="bilinear", antialias=True,
                                            align_corners=False)
        tok = self.model(x)
        gem = tok["patch"].clamp(min=1e-6).pow(3).mean(1).pow(1 / 3)
        norm = torch.nn.functional.normalize
        return torch.cat([norm(tok["cls"], dim=-1), norm(gem, dim=-1)], -1)[0].float().cpu().numpy()


class ThumbDescriber(PixelDescriber):
    """Colour layout and colour statistics, no weights: a ``thumb_side`` x ``thumb_side`` RGB
    thumbnail less its mean colour, next to a Hellinger-normalised HSV histogram (``thumb_bins``).
    Weak on its own (it knows nothing of viewpoint), a second opinion next to VLAD or DINOv2."""

    def _describe(self, dec: images_mod.DecodedImage) -> Optional[np.ndarray]:
        try:
            rgb = _rgb(dec.image)
        except Exception:  # PIL raises many types on bad data; the features stage already warned
            return None
        side, bins = int(self.conf["thumb_side"]), tuple(int(b) for b in self.conf["thumb_bins"])
        thumb = np.asarray(rgb.resize((side, side), Image.BILINEAR, reducing_gap=2.0), np.float32) / 255
        layout = (thumb - thumb.mean((0, 1))).reshape(-1)
        hsv = np.asarray(rgb.resize((64, 64), Image.BILINEAR, reducing_gap=2.0).convert("HSV"), np.float32) / 256
        hist = np.histogramdd(hsv.reshape(-1, 3), bins=bins, range=[(0, 1)] * 3)[0].reshape(-1)
        hist = np.sqrt(hist / max(hist.sum(), 1.0))
        return np.concatenate([l2(layout), l2(hist)]).astype(np.float32) / np.sqrt(2)


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "F":  # high-depth data, already normalised to [0, 1] by the decoder
        a = (np.clip(np.asarray(img, np.float32), 0, 1) * 255).astype(np.uint8)
        return Image.fromarray(a).convert("RGB")
    return img.convert("RGB")


DESCRIBERS = {"dinov2": DinoDescriber, "thumb": ThumbDescriber}


class Describers:
    """Every pixel describer a retrieval config needs, fed together by the features stage."""

    def __init__(self, parts: Dict[str, PixelDescriber]):
        self.parts = parts

    def add(self, dec: images_mod.DecodedImage) -> None:
        for d in self.parts.values():
            d.add(dec)

    @property
    def seconds(self) -> float:
        return sum(d.seconds for d in self.parts.values())
