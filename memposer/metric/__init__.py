"""The IMC2025 score, reproduced exactly and fast.

Per (true scene, predicted cluster) the predicted camera centres of the shared images are aligned
to the true centres with a similarity found by an exhaustive RANSAC over camera triplets (Horn's
quaternion method per triplet, least-squares refinement on each triplet's inliers, one best model
per threshold). mAA counts, per threshold except the ``skip_top_thresholds`` smallest, the cameras
within the threshold minus ``to_dec`` (the cameras a minimal model always fits). Each true scene is
associated with the cluster sharing most images with it (ties: higher mAA, then first cluster in
file order); clusterness = shared images / sizes of the associated clusters. Per dataset the score
is the harmonic mean of mAA and clusterness; the final score is the mean over datasets.

Details taken from the organisers' ``score()`` and matched here:

- Defaults ``inl_cf=0, strict_cf=-1`` (every triplet tried, every inlier set with > 2 cameras
  refined); the heuristic ``inl_cf=0.8, strict_cf=0.5`` of earlier challenges is available too.
- A triplet's inlier set at a threshold is skipped when it equals the set at a smaller threshold
  *index*; a refined model replaces the best one of *every* threshold where it has more inliers, or
  as many with a smaller sum of squared errors over *all* cameras. The first such model is kept.
- Inliers use ``err^2 < th^2``; mAA uses ``err < th`` with ``err`` the distance to the truth.
- Predicted centres that are not finite drop out of the registration; they still count as shared.
- Dataset mAA pools counts: ``sum_scenes sum_th max(0, k - 3) / (lt * (sum_scenes m - 3 * n_scenes))``
  with ``m`` the true scene size (so scenes with < 3 images shrink the denominator); 0 if that is 0.
- A true scene sharing no image with any cluster is associated with the *first* cluster of the
  submission (its size then counts in the clusterness denominator), as in the official code.

Where the official code refuses a submission (missing, duplicated or foreign images) this module
decides instead, with a warning: a missing image counts as if it were in the ``outliers`` cluster,
a duplicate row is dropped (first row kept), an image not in the labels is ignored.

Modules: ``score`` (the score and its per-image table), ``results`` (what it returns),
``submission`` (rows cleaned as above, camera centres), ``registration`` (a registration's result
and the best-model update rule), ``search`` (the fast triplet search, :func:`register`) with
``screen`` (GEMM inlier screening with proven error bounds), ``reference`` (the plain loop the
fast search is tested against) and ``kernels`` (the batched arithmetic both share).
"""
from .registration import Alignment, Registration
from .results import DatasetResult, ImageRow, Result, SceneResult
from .score import HEURISTIC_CONF, default_conf, score_submission
from .search import register

__all__ = ["Alignment", "DatasetResult", "HEURISTIC_CONF", "ImageRow", "Registration", "Result", "SceneResult", "default_conf",
           "register", "score_submission"]
