"""pycolmap's synthetic scene written into a COLMAP database (shared by the tests beside this file)."""
from pathlib import Path

import pycolmap


def synthetic_database(path: Path, num_images: int = 12, num_points: int = 300, pixel_noise: float = 0.0,
                       seed: int = 0) -> pycolmap.Reconstruction:
    """One camera, ``num_images`` frames and ``num_points`` points, their exact matches (plus Gaussian
    keypoint noise of ``pixel_noise`` px) and verified pairs written to ``path``; returns the truth."""
    opts = pycolmap.SyntheticDatasetOptions()
    opts.num_rigs, opts.num_cameras_per_rig, opts.num_frames_per_rig = 1, 1, num_images
    opts.num_points3D = num_points
    db = pycolmap.Database.open(str(path))
    try:
        pycolmap.set_random_seed(seed)
        truth = pycolmap.synthesize_dataset(opts, db)
        if pixel_noise:
            pycolmap.synthesize_noise(pycolmap.SyntheticNoiseOptions(point2D_stddev=pixel_noise), truth, db)
    finally:
        db.close()
    return truth
