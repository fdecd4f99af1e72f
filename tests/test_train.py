"""train.py end to end in a subprocess, as a user runs it: steps, export, resume, init, errors, loggers, DDP (gloo)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memposer.models.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def common(out):
    return ["model=tiny", "logger=csv", "trainer.accelerator=cpu", "trainer.precision=32-true",
            "data.num_workers=0", "data.batch_size=2", "data.val_batches=1", "data.val_batch_size=4",
            "data.scenes.cameras=[3,5]", "data.scenes.tracks=32", "data.scenes.points=200",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", f"output_dir={out}",
            f"export={out}/model.safetensors"]  # never the repo's checkpoints/ (a test must not overwrite a model)


def train(*args, timeout=300, wandb_mode="disabled"):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("WANDB_MODE", None)
    if wandb_mode:
        env["WANDB_MODE"] = wandb_mode
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_fast_dev_run_trains_one_step_and_exports(tmp_path):
    r = train(*common(tmp_path), "trainer.fast_dev_run=true")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train/loss"] > 0 and 0 <= metrics["val/rot_err_median"] <= 180
    assert metrics["val_identity/tdir_err_median"] == pytest.approx(90.0)  # zero translations: no direction
    model = load_checkpoint(tmp_path / "model.safetensors")
    assert model.conf["dim"] == 32 and model.checkpoint_meta["metrics"]["train/loss"] > 0
    assert "attention backend: sdpa" in r.stderr


def test_checkpoint_resume_and_init_from(tmp_path):
    ck = tmp_path / "ck"
    args = [*common(tmp_path), f"checkpoint.dirpath={ck}", "data.steps_per_epoch=2", "trainer.num_sanity_val_steps=0"]
    r = train(*args, "trainer.max_steps=2")
    assert r.returncode == 0, r.stderr[-3000:]
    last = torch.load(ck / "last.ckpt", weights_only=True)  # plain data: the safe loader reads it
    assert last["global_step"] == 2 and last["memposer"]["version"] == 2
    assert load_checkpoint(ck / "last.ckpt").conf["depth"] == 2
    r = train(*args, "trainer.max_steps=4", f"resume={ck / 'last.ckpt'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Restoring states from the checkpoint" in r.stderr
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 4
    r = train(*common(tmp_path / "i"), "trainer.max_steps=1", f"init_from={tmp_path / 'model.safetensors'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "weights initialised from" in r.stderr
    # a refinement model starts from the same decoder; only its new modules are fresh
    r = train(*common(tmp_path / "k"), "model.refine_iters=1", "model.refine_depth=1", "trainer.max_steps=1",
              f"init_from={tmp_path / 'model.safetensors'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "new modules start fresh: ['ray_encoder', 'refine_head', 'refiner']" in r.stderr
    r = train(*common(tmp_path / "e"), "model.exif_input=true", "trainer.max_steps=1",
              f"init_from={tmp_path / 'model.safetensors'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "new modules start fresh: ['exif_token']" in r.stderr
    r = train(*common(tmp_path / "j"), "model.dim=48", "trainer.max_steps=1", f"init_from={tmp_path / 'model.safetensors'}")
    assert r.returncode == 2 and "differs from" in r.stderr


@pytest.mark.parametrize("override,message", [
    ("data.scenes.camras=[2,3]", "unknown data.scenes option"),
    ("datum.root=x", "unknown config key datum (did you mean data?); valid keys: attention,"),
    ("model=huge", "model config 'huge' not found"),
    ("model.dimm=3", "unknown config key model.dimm (did you mean model.dim?)"),
    ("trainer.no_such_option=1", "bad trainer option"),
])
def test_user_errors_are_one_clear_line(tmp_path, override, message):
    r = train(*common(tmp_path), override, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr and "Traceback" not in r.stderr


def test_wandb_logs_offline_by_default_and_can_be_switched_off(tmp_path):
    quick = ["trainer.max_steps=1", "data.steps_per_epoch=1", "trainer.num_sanity_val_steps=0", "wandb.name=unit"]
    base = [a for a in common(tmp_path / "w") if not a.startswith("logger=")]
    r = train(*base, *quick, wandb_mode=None, timeout=240)  # the config's default logger: wandb, offline
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path / "w" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    off = [a for a in common(tmp_path / "n") if not a.startswith("logger=")]
    r = train(*off, *quick, "logger=none", wandb_mode=None, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "n" / "wandb").exists() and not (tmp_path / "n" / "csv").exists()
    assert (tmp_path / "n" / "metrics.json").is_file()


def test_ddp_two_processes_gloo(tmp_path):
    """Lightning DDP on CPU (gloo): two ranks train on different scenes, replicas stay identical."""
    r = train(*common(tmp_path), "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2",
              "data.steps_per_epoch=4", "trainer.num_sanity_val_steps=0",
              "debug.param_checksum=true", "debug.throughput_warmup=0")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = re.findall(r"PARAM_CHECKSUM rank=(\d) world_size=(\d) steps=(\d+) value=([-+0-9.eE]+)", r.stdout + r.stderr)
    assert sorted(x[0] for x in lines) == ["0", "1"], r.stdout[-2000:]
    assert {x[1] for x in lines} == {"2"} and {x[2] for x in lines} == {"2"}
    assert lines[0][3] == lines[1][3]  # same parameters on both ranks after 2 steps
    assert (tmp_path / "model.safetensors").is_file()
    thr = json.loads((tmp_path / "throughput.json").read_text())
    # 2 steps x 2 ranks x 2 scenes of 3-5 cameras: the frame counts of both ranks are summed
    assert thr["world_size"] == 2 and thr["timed_steps"] == 2 and 24 <= thr["frames"] <= 40


def test_without_the_train_extra_a_clear_message(tmp_path):
    """Lightning missing (the default install has no [train] extra): one message naming the extra."""
    r = subprocess.run([sys.executable, "tests/blocked_imports.py", "pytorch_lightning,lightning,wandb", "train.py",
                        *common(tmp_path), "trainer.fast_dev_run=true"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    assert 'pip install -e ".[train]"' in r.stderr and "Traceback" not in r.stderr


def test_perturbed_start_poses_stay_within_the_noise_asked_for():
    import numpy as np

    from memposer.data.tracks import sample_batch
    from memposer.geometry import camera_center, rotation_error
    from memposer.training.data import perturbed_poses

    b = sample_batch(3, 4)
    rng = np.random.default_rng(0)
    R, c = perturbed_poses(rng, b["R"], b["t"], {"rot_deg": [20.0, 20.0], "center": [0.0, 0.0]})
    e = rotation_error(R.double().numpy(), b["R"].double().numpy())
    assert e.max() <= 20.0 + 1e-3 and np.median(e) > 5
    assert torch.allclose(c, camera_center(b["R"], b["t"]), atol=1e-5)
    _, c2 = perturbed_poses(rng, b["R"], b["t"], {"rot_deg": [0.0, 0.0], "center": [0.5, 0.5]})
    assert (c2 - c).norm(dim=-1).mean() > 0.1


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("train*.yaml")), ids=lambda p: p.name)
def test_every_training_config_loads_and_draws_a_batch(path):
    """A typo in a shipped recipe (an unknown scene option, a bad base) fails here, not on the GPU."""
    from memposer.training.config import load_config  # noqa: PLC0415
    from memposer.training.data import TrackDataModule, TrainBatches  # noqa: PLC0415

    conf = load_config(path, ["data.batch_size=2"])
    batch = next(iter(TrainBatches(TrackDataModule(conf["data"], seed=0).conf, seed=0)))
    assert batch["obs"].shape[0] == 2 and batch["mask"].any(1).all()


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("train*.yaml")), ids=lambda p: p.name)
def test_every_training_config_with_a_shipped_init_loads_it(path):
    """A recipe that starts from a checkpoint in git builds a model those weights fit (a child config's
    ``model: {...}`` once replaced its base's preset name and dropped the refinement passes)."""
    from memposer.models.mempose import MemPoser  # noqa: PLC0415
    from memposer.config import merge_strict  # noqa: PLC0415
    from memposer.training.config import load_config  # noqa: PLC0415
    from memposer.training.run import init_weights  # noqa: PLC0415

    conf = load_config(path)
    src = REPO / str(conf["init_from"])
    if not conf["init_from"]:
        pytest.skip("trains from scratch (no init_from)")
    if not src.is_file():
        pytest.skip(f"init_from {conf['init_from']} is a training output, not in git")
    model = MemPoser(merge_strict(MemPoser.default_conf, conf["model"], "model."))
    init_weights(model, str(src))  # raises on a config or tensor mismatch
    shipped = load_checkpoint(src)
    for k, v in shipped.state_dict().items():
        assert torch.equal(model.state_dict()[k].to(v.dtype), v), k


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("train*_gpu.yaml")), ids=lambda p: p.name)
def test_every_gpu_recipe_validates_and_saves_its_last_steps(path):
    """The last checkpoint is written at validation: a max_steps that the validation interval does not
    divide loses the steps after the last validation (stage 6's first run kept step 1000 of 1400), and
    the interval must count global steps, not steps within an epoch (checked by running it below)."""
    from memposer.training.config import load_config  # noqa: PLC0415

    t = load_config(path)["trainer"]
    assert t["max_steps"] % t["val_check_interval"] == 0, (t["max_steps"], t["val_check_interval"])
    assert t["check_val_every_n_epoch"] is None, "val_check_interval would count steps within an epoch"


def test_validation_interval_across_epochs_saves_the_last_step(tmp_path):
    """The GPU recipes' validation schedule, scaled down: epochs of 3 steps, validation every 2 steps,
    4 steps. Counted within an epoch (Lightning's default) the last validation is at step 2 and the
    saved checkpoint loses steps 3-4, as stage 7's first call lost steps 801-1600 of 1600."""
    from memposer.training.config import load_config  # noqa: PLC0415

    every = load_config(REPO / "configs" / "train_gpu.yaml")["trainer"]["check_val_every_n_epoch"]
    ck = tmp_path / "ck"
    r = train(*common(tmp_path), f"checkpoint.dirpath={ck}", "data.steps_per_epoch=3",
              "trainer.num_sanity_val_steps=0", "trainer.val_check_interval=2", "trainer.max_steps=4",
              f"trainer.check_val_every_n_epoch={'null' if every is None else every}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 4
    import csv  # noqa: PLC0415

    rows = list(csv.DictReader(open(next((tmp_path / "csv").glob("version_*/metrics.csv")))))
    assert sorted({int(r["step"]) for r in rows if r.get("val/rot_err_median")}) == [1, 3]  # steps 2 and 4
