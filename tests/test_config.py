"""memposer.config: YAML values in presets and overrides."""
from memposer.config import parse_overrides, read_yaml


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    assert dict(parse_overrides(["optim.lr=3e-4", "a=5", "b=abc", "c=[6,40]"])) == \
        {"optim.lr": 3e-4, "a": 5, "b": "abc", "c": [6, 40]}
    p = tmp_path / "x.yaml"
    p.write_text("lr: 3e-4\nsteps: 10\n")
    conf = read_yaml(p)
    assert conf["lr"] == 3e-4 and isinstance(conf["steps"], int)
