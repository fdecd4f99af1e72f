"""Shared test set-up: quiet COLMAP's logging, deterministic seeds."""
import os

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import pycolmap  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pycolmap.logging.minloglevel = 2  # warnings and info from COLMAP flood the test output


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)
    yield
