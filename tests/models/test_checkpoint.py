"""Checkpoints: safetensors round trip (fp32 and fp16), Lightning checkpoints through the safe loader,
and files that would run code, of the old format or corrupt, refused with a message."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from memposer.data.tracks import sample_batch
from memposer.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from memposer.models.mempose import MemPoser

TINY = {"dim": 32, "num_heads": 2, "depth": 2}


def _outputs(model):
    b = sample_batch(7, 2, {"cameras": [4, 6], "points": 200, "tracks": 48})
    with torch.no_grad():
        return model.eval()(b["obs"], b["vis"], b["mask"])


def test_round_trip_fp32_is_exact_and_fp16_is_close(tmp_path):
    torch.manual_seed(0)
    m = MemPoser(TINY)
    ref = _outputs(m)
    save_checkpoint(m, tmp_path / "a.safetensors", extra={"metrics": {"val/rot": 1.5}})
    a = load_checkpoint(tmp_path / "a.safetensors")
    assert a.conf == m.conf and a.checkpoint_meta["metrics"] == {"val/rot": 1.5}
    assert torch.equal(_outputs(a)["R"], ref["R"])
    save_checkpoint(m, tmp_path / "h.safetensors", dtype="float16")
    assert os.path.getsize(tmp_path / "h.safetensors") < 0.6 * os.path.getsize(tmp_path / "a.safetensors")
    h = load_checkpoint(tmp_path / "h.safetensors")
    assert next(h.parameters()).dtype == torch.float32
    assert (_outputs(h)["R"] - ref["R"]).abs().max() < 2e-2


def test_lightning_checkpoint_loads_through_weights_only(tmp_path):
    torch.manual_seed(1)
    m = MemPoser(TINY)
    from memposer.models.checkpoint import checkpoint_meta
    ckpt = {"state_dict": {"model." + k: v for k, v in m.state_dict().items()}, "memposer": checkpoint_meta(m),
            "global_step": 3, "hyper_parameters": {"model": m.conf}}
    torch.save(ckpt, tmp_path / "last.ckpt")
    meta, sd = read_checkpoint(tmp_path / "last.ckpt")
    assert meta["version"] == 2 and set(sd) == set(m.state_dict())
    assert torch.equal(_outputs(load_checkpoint(tmp_path / "last.ckpt"))["t"], _outputs(m)["t"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/memposer_pwned",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    torch.save({"state_dict": {}, "memposer": {"format": "memposer-checkpoint", "version": 2}, "x": _Evil()},
               tmp_path / "evil.ckpt")
    if os.path.exists("/tmp/memposer_pwned"):
        os.remove("/tmp/memposer_pwned")
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.ckpt")
    assert not os.path.exists("/tmp/memposer_pwned")


def test_old_format_corrupt_and_missing_files_are_clear_errors(tmp_path):
    old = tmp_path / "old.safetensors"
    save_file({"w": torch.zeros(2)}, str(old), metadata={"memposer": json.dumps({"format": "memposer-checkpoint",
                                                                                   "version": 1})})
    with pytest.raises(ValueError, match="v1 is not supported"):
        load_checkpoint(old)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "none.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a MemPoser checkpoint"):
        load_checkpoint(other)
