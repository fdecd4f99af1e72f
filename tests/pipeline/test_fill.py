"""Filling unregistered images with the network's pose in the model's gauge."""
import numpy as np

from memposer.geometry import apply_similarity, camera_center, look_at, random_rotation, rotation_error
from memposer.pipeline.fill import fill_unregistered


def _poses(n, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        a = 2 * np.pi * i / n
        out[f"im{i}"] = look_at(np.array([4 * np.cos(a), 4 * np.sin(a), rng.uniform(0, 1)]), rng.normal(0, 0.1, 3))
    return out


def test_missing_images_get_the_prediction_in_the_models_gauge():
    truth = _poses(10)
    rng = np.random.default_rng(1)
    Rs, ts, s = random_rotation(rng), rng.normal(size=3), 3.0
    pred = {n: apply_similarity(R, t, s, Rs, ts) for n, (R, t) in truth.items()}  # another gauge
    model = {n: truth[n] for n in list(truth)[:7]}
    other = {"x": truth["im0"]}
    models, stats = fill_unregistered([model, other], pred, {n: 0.9 for n in pred})
    assert stats["filled"] == 3 and stats["rotation_deg"] < 1e-4 and stats["centre_error"] < 1e-6
    for n in ("im7", "im8", "im9"):
        assert rotation_error(models[0][n][0], truth[n][0]) < 1e-4
        assert np.allclose(camera_center(*models[0][n]), camera_center(*truth[n]), atol=1e-6)
    assert models[1] == other


def test_nothing_is_filled_when_network_and_model_disagree_or_confidence_is_low():
    truth = _poses(10)
    rng = np.random.default_rng(2)
    wrong = {n: (random_rotation(rng), rng.normal(size=3)) for n in truth}
    model = {n: truth[n] for n in list(truth)[:7]}
    models, stats = fill_unregistered([model], wrong, {n: 0.9 for n in truth})
    assert stats["filled"] == 0 and len(models[0]) == 7
    models, stats = fill_unregistered([model], truth, {n: 0.1 for n in truth})
    assert stats["filled"] == 0
