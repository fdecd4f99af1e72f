"""One bundle for this machine, built once per session (repacking the installed wheels takes ~15 s)."""
import pytest

from memposer.kaggle.bundle import build_bundle


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("kaggle")
    build_bundle(root / "bundle", wheel_cache=root / "wheel-cache", dinov2="/kaggle/input/dinov2/vits14.pth")
    return root / "bundle"
