"""train.py end to end in a subprocess, as a user runs it: one step, checkpoints, resume, errors, DDP (gloo)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from tiny_imc import write_tiny_imc  # noqa: E402

from memposer.models.mempose import load_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_tiny_imc(tmp_path_factory.mktemp("imc"), n_datasets=2, scenes_per_dataset=2, frames=6)


def common(root, out):
    return ["model=tiny", f"data.root={root}", "logger=csv", "trainer.accelerator=cpu", "trainer.precision=32-true",
            "data.num_workers=0", "data.frames=[2,4]", "data.batch_size=2", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", f"output_dir={out}", "data.val_fraction=0.25",
            f"export={out}/model.ckpt"]  # never the repo's checkpoints/ (a test must not overwrite a user's model)


def train(*args, timeout=300, wandb_mode="disabled"):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("WANDB_MODE", None)
    if wandb_mode:
        env["WANDB_MODE"] = wandb_mode
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_fast_dev_run_trains_one_step_and_exports(root, tmp_path):
    r = train(*common(root, tmp_path), "trainer.fast_dev_run=true", f"export={tmp_path / 'm.ckpt'}")
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["train/loss"] > 0 and 0 <= metrics["val/rot_err_median"] <= 180
    assert metrics["val_identity/tdir_err_median"] == pytest.approx(90.0)  # zero translations: no direction
    try:
        from memposer.metric import score_submission  # noqa: F401
        assert 0 <= metrics["val/mAA"] <= 1
    except ImportError:
        pass
    model = load_checkpoint(tmp_path / "m.ckpt")
    out = model.predict(torch.rand(3, 3, 56, 56))
    assert out["R"].shape == (3, 3, 3)
    assert "attention backend: sdpa" in r.stderr


def test_checkpoint_and_resume(root, tmp_path):
    ck = tmp_path / "ck"
    args = [*common(root, tmp_path), f"checkpoint.dirpath={ck}", "data.samples_per_epoch=4",
            "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0", "model.backbone.trainable_blocks=1"]
    r = train(*args, "trainer.max_steps=2")
    assert r.returncode == 0, r.stderr[-3000:]
    last = torch.load(ck / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2
    keys = set(last["state_dict"])
    assert "model.backbone.vit.blocks.1.attn.qkv.weight" in keys  # trained block kept
    assert not any(k.startswith("model.backbone.vit.blocks.0.") for k in keys)  # frozen block left out
    assert last["memposer"]["backbone"] == "vit_small_patch14_dinov2"
    assert load_checkpoint(ck / "last.ckpt").conf["backbone"]["trainable_blocks"] == 1
    r = train(*args, "trainer.max_steps=4", f"resume={ck / 'last.ckpt'}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Restoring states from the checkpoint" in r.stderr
    assert torch.load(ck / "last.ckpt", weights_only=False)["global_step"] == 4


@pytest.mark.parametrize("override,message", [
    ("data.root=/nonexistent/imc", "labels file not found"),
    ("datum.root=x", "unknown config section"),
    ("model=huge", "model config 'huge' not found"),
    ("trainer.no_such_option=1", "bad trainer option"),
])
def test_user_errors_are_one_clear_line(root, tmp_path, override, message):
    r = train(*common(root, tmp_path), override, timeout=120)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_wandb_logs_offline_by_default_and_can_be_switched_off(root, tmp_path):
    pytest.importorskip("wandb")
    base = [a for a in common(root, tmp_path / "w") if not a.startswith("logger=")]
    quick = ["trainer.max_steps=1", "data.samples_per_epoch=2", "trainer.limit_val_batches=1",
             "trainer.num_sanity_val_steps=0", "wandb.name=unit"]
    r = train(*base, *quick, wandb_mode=None, timeout=240)  # the configs' default logger: wandb, offline
    assert r.returncode == 0, r.stderr[-3000:]
    runs = list((tmp_path / "w" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    off = [a for a in common(root, tmp_path / "n") if not a.startswith("logger=")]
    r = train(*off, *quick, "logger=none", wandb_mode=None, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (tmp_path / "n" / "wandb").exists() and not (tmp_path / "n" / "csv").exists()
    assert (tmp_path / "n" / "metrics.json").is_file()


def test_ddp_two_processes_gloo(root, tmp_path):
    """Lightning DDP on CPU (gloo): two ranks train, gradients are averaged, replicas stay identical."""
    r = train(*common(root, tmp_path), "trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=2",
              "data.samples_per_epoch=8", "trainer.limit_val_batches=1", "trainer.num_sanity_val_steps=0",
              "debug.param_checksum=true", "debug.throughput_warmup=0", f"export={tmp_path / 'ddp.ckpt'}")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = re.findall(r"PARAM_CHECKSUM rank=(\d) world_size=(\d) steps=(\d+) value=(\S+)", r.stdout + r.stderr)
    assert sorted(x[0] for x in lines) == ["0", "1"], r.stdout[-2000:]
    assert {x[1] for x in lines} == {"2"} and {x[2] for x in lines} == {"2"}
    assert lines[0][3] == lines[1][3]  # same parameters on both ranks after 2 steps
    assert (tmp_path / "ddp.ckpt").is_file()
    thr = json.loads((tmp_path / "throughput.json").read_text())
    # 2 steps x 2 ranks x 2 scenes of 2-4 frames: the frame counts of both ranks are summed
    assert thr["world_size"] == 2 and thr["timed_steps"] == 2 and 16 <= thr["frames"] <= 32
