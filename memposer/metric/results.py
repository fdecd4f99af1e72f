"""What scoring returns: per scene, per dataset, per image, and the whole result."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from .registration import Alignment, Registration


@dataclass
class SceneResult:
    """A true scene, its associated cluster and the registration behind its mAA."""

    dataset: str
    scene: str
    cluster: Optional[str]      # associated predicted cluster (None: no cluster at all)
    n_images: int               # true scene size
    n_shared: int               # images of the scene in the cluster
    cluster_size: int           # rows of the cluster in the submission
    mAA: float                  # this pair's mAA (the official per-pair value)
    n_counted: int              # sum over scored thresholds of max(0, registered - to_dec)
    images: List[str] = field(default_factory=list)      # shared images, true-scene order
    registration: Optional[Registration] = None
    alignment: Optional[Alignment] = None


@dataclass
class DatasetResult:
    score: float
    mAA: float
    clusterness: float
    scenes: List[str] = field(default_factory=list)


@dataclass
class ImageRow:
    """One line of the per-image registration table."""

    dataset: str
    scene: str
    image: str
    cluster: Optional[str]   # cluster given in the submission (None: missing row)
    error: float             # distance to the truth after the best alignment (largest threshold); nan if not registered
    passed: Tuple[bool, ...]  # per threshold, with that threshold's own best model
    used_for_alignment: bool  # in the inlier set the best model (largest threshold) was fitted on
    in_triplet: bool          # one of the three cameras of that model's minimal sample


@dataclass
class Result:
    score: float
    datasets: Dict[str, DatasetResult]
    scenes: Dict[Tuple[str, str], SceneResult]
    table: List[ImageRow]
    thresholds: Dict[str, Dict[str, List[float]]]

    def alignment(self, dataset: str, scene: str) -> Optional[Alignment]:
        s = self.scenes.get((dataset, scene))
        return None if s is None else s.alignment
