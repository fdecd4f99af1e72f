"""Config keys: every preset loads with strict keys, every default key is read by the code that owns it,
and a typo at any depth fails with the list of valid keys."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from memposer.config import config_dir, set_override
from memposer.pipeline import checks
from memposer.pipeline.cli import load_infer_config
from memposer.pipeline.run import default_conf

PKG = Path(__file__).resolve().parents[2] / "memposer"
# Which modules read each section of the pipeline config (the section's code and the one
# pycolmap module it hands its settings to).
READERS = {
    (): ["pipeline/run.py", "pipeline/cli.py"],
    ("features",): ["pipeline/features.py"],
    ("features", "upright"): ["pipeline/upright.py", "pipeline/features.py"],
    ("retrieval",): ["pipeline/retrieval.py", "pipeline/describers.py"],
    ("pairs",): ["pipeline/pairs.py", "pipeline/prematch.py"],
    ("matching",): ["pipeline/matching.py"],
    ("verification",): ["pipeline/verification.py", "colmap.py"],
    ("clustering",): ["pipeline/clustering.py"],
    ("reconstruction",): ["pipeline/reconstruction.py", "colmap.py", "pipeline/cli.py"],  # cli: the predictor
    ("reconstruction", "seeding"): ["pipeline/seeding.py", "pipeline/reconstruction.py"],  # reconstruction: keep_*
    ("reconstruction", "fill"): ["pipeline/fill.py"],
    ("reconstruction", "split"): ["pipeline/split.py", "pipeline/reconstruction.py"],
    ("reconstruction", "best_pair_check"): ["pipeline/reconstruction.py"],
    ("reconstruction", "intrinsics"): ["pipeline/intrinsics.py"],
}


def _read_keys(files) -> set:
    """String keys a module reads: ``x["key"]``, ``x.get("key")`` and names in tuples/dicts of keys."""
    out = set()
    for f in files:
        for node in ast.walk(ast.parse((PKG / f).read_text())):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                out.add(node.slice.value)
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                out.add(node.args[0].value)
            elif isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.Dict)) and any(
                    isinstance(t, ast.Name) and t.id.isupper() for t in node.targets):
                # module constants naming keys read in a loop, e.g. SHARED_WITH_SEEDING, INCREMENTAL_ONLY
                items = node.value.elts if isinstance(node.value, ast.Tuple) else node.value.keys
                out |= {e.value for e in items if isinstance(e, ast.Constant)}
    return out


def _sections(conf: dict, path=()):
    yield path, conf
    for k, v in conf.items():
        if isinstance(v, dict) and v:
            yield from _sections(v, path + (k,))


def test_every_default_key_is_read_by_its_stage():
    assert {p for p, _ in _sections(default_conf)} == set(READERS), "a new section needs its readers listed"
    unread = []
    for path, section in _sections(default_conf):
        read = _read_keys(READERS[path])
        unread += [".".join(path + (k,)) for k, v in section.items()
                   if k not in read and not (isinstance(v, dict) and v)]
    assert not unread, f"config keys nothing reads (remove them or read them): {unread}"


def test_the_key_scan_sees_an_unread_key():
    """Control: the scan must be able to fail."""
    assert "kk" not in _read_keys(READERS[("pairs",)]) and "k" in _read_keys(READERS[("pairs",)])


@pytest.mark.parametrize("preset", sorted(p.stem for p in (config_dir() / "infer").glob("*.yaml")))
def test_every_infer_preset_loads_with_strict_keys(preset):
    conf = load_infer_config(preset, [])
    checks.check_choices(conf)
    assert set(conf) == set(default_conf)


def test_every_other_preset_loads_with_strict_keys():
    """Training, model and synthetic presets go through their own strict loaders."""
    from memposer.data.synthetic.generate import available_presets, load_conf
    from memposer.config import merge_strict
    from memposer.models.mempose import MemPoser
    from memposer.training.config import load_config, resolve_model

    for name in available_presets():
        load_conf(name)
    for p in sorted((config_dir() / "model").glob("*.yaml")):
        merge_strict(MemPoser.default_conf, resolve_model(p.stem), "model.")
    for p in sorted(config_dir().glob("train*.yaml")):
        conf = load_config(p)
        merge_strict(MemPoser.default_conf, conf["model"], "model.")


@pytest.mark.parametrize("key,expect", [
    ("pairs.kk", "unknown config key pairs.kk (did you mean pairs.k?); valid keys of pairs: block, exhaustive_below, k,"),
    ("reconstruction.seeding.num_round", "did you mean reconstruction.seeding.num_rounds?"),
    ("reconstruction.seeding.seed", "valid keys of reconstruction.seeding:"),  # the seed comes from reconstruction.seed
    ("matching.features", "unknown config key matching.features"),  # follows the features file now
    ("pairs.k.x", "config key pairs.k is a value, not a section"),
    ("pair.k", "unknown config key pair (did you mean pairs?)"),
])
def test_a_typo_at_any_depth_names_the_valid_keys(key, expect):
    conf = load_infer_config("cpu", [])
    with pytest.raises(KeyError) as e:
        set_override(conf, key, 5, default_conf)
    assert expect in e.value.args[0]


def test_a_typo_in_a_preset_file_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: " + str(config_dir() / "infer" / "cpu.yaml") + "\nclustering: {min_inlier: 30}\n")
    with pytest.raises(KeyError, match="clustering.min_inlier .did you mean clustering.min_inliers"):
        load_infer_config(str(bad), [])


def test_global_mapper_refuses_incremental_only_settings():
    conf = load_infer_config("cpu", ["reconstruction.mapper=global", "reconstruction.max_runtime_seconds=60"])
    with pytest.raises(checks.UsageError, match="max_runtime_seconds works with the incremental mapper only"):
        checks.check_choices(conf)
    conf = load_infer_config("cpu", ["reconstruction.split.enabled=true"])  # the default mapper is best
    with pytest.raises(checks.UsageError, match="split.enabled=true works with the incremental mapper only"):
        checks.check_choices(conf)
    checks.check_choices(load_infer_config("cpu", ["reconstruction.split.enabled=true", "reconstruction.mapper=incremental"]))
    conf = load_infer_config("cpu", ["features.extractor=superpoint"])
    with pytest.raises(checks.UsageError, match="features.extractor=superpoint is not one of aliked, disk, sift"):
        checks.check_choices(conf)
