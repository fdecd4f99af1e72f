"""benchmarks/ceilings.py's reconstruction ceiling and benchmarks/plot_timeline.py on a hand-made schedule."""
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import ceilings  # noqa: PLC0415
    import plot_timeline  # noqa: PLC0415
    yield ceilings, plot_timeline
    for name in ("ceilings", "plot_timeline"):
        sys.modules.pop(name, None)


def _row(start, end, worker, images=5):
    return {"cluster": 0, "images": images, "start": start, "end": end, "seconds": end - start, "worker": worker}


def test_reconstruction_ceiling_is_the_longest_cluster_or_the_work_spread_over_the_workers(bench):
    ceilings, _ = bench
    rows = {"a": [{"seconds": 4.0}, {"seconds": 1.0}, {"seconds": 1.0}], "b": [{"seconds": 3.0}] * 4, "c": []}
    # a: its 4 s cluster bounds it on 2 workers; b: 12 s over 2 workers; datasets run one after another
    assert ceilings.reconstruction_ceiling(rows, 2) == pytest.approx(4.0 + 6.0)
    assert ceilings.reconstruction_ceiling(rows, 1) == pytest.approx(6.0 + 12.0)
    assert ceilings.reconstruction_ceiling(rows, 16) == pytest.approx(4.0 + 3.0)  # more workers than clusters


def test_timeline_plot_is_written_and_names_a_missing_variant(bench, tmp_path):
    _, plot = bench
    row = {"variant": "best", "reconstruction_workers": 2,
           "timeline": {"a": [_row(0, 4, 0, 14), _row(0, 1, 1), _row(1, 2.5, 1)], "b": [_row(0, 3, 0)]}}
    results = tmp_path / "results.json"
    results.write_text(json.dumps([row]))
    assert plot.main([str(results), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="no variant 'x'"):
        plot.main([str(results), "--out", str(tmp_path / "u.png"), "--variant", "x"])
