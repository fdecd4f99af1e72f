"""MemPoser as a pose predictor for the reconstruction stage (``--poses memposer|seeded``)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

from memposer.pipeline.features import pick_device
from memposer.pipeline.reconstruction import Predictor

log = logging.getLogger(__name__)


def load_predictor(checkpoint: str | Path, dinov2: Optional[str] = None, device: str = "auto") -> Predictor:
    """A function ``paths of one cluster -> (R, t, conf)`` from a MemPoser checkpoint."""
    from memposer.models.mempose import load_checkpoint  # noqa: PLC0415 (timm import is slow)

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"MemPoser checkpoint not found: {checkpoint} (see checkpoints/README.md)")
    model = load_checkpoint(checkpoint, map_location=pick_device(device), backbone_weights=dinov2)
    log.info("MemPoser predictor from %s", checkpoint)

    def predict(paths: List[Path]):
        return tuple(model.predict_cluster([str(p) for p in paths]))

    return predict
