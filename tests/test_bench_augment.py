"""bench/bench_augment.py runs end to end in its --quick mode (it measures nothing here)."""

import json
from pathlib import Path

import pytest

import fastcnn

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench_augment(monkeypatch):
    """The script as a module; the thread count it sets is undone after the test."""
    if not (BENCH / "bench_augment.py").exists():  # tests run from an installed wheel
        pytest.skip("bench/ is not beside the tests")
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_augment

    yield bench_augment
    fastcnn.set_num_threads(None)  # back to the default


def test_quick_mode_times_every_configuration(bench_augment, tmp_path, capsys):
    out = tmp_path / "augment.json"
    bench_augment.main(["--quick", "--threads", "1", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row["config"] for row in rows] == ["none", "affine", "affine-sync", "crop"]
    for row in rows:
        assert row["batches"] == 3 and row["epoch_s"] > 0
    assert rows[0]["ratio_to_none"] == 1.0 and rows[0]["transform_ms"] is None
    assert rows[1]["prefetch"] and not rows[2]["prefetch"] and rows[3]["transform_ms"] > 0
    assert "| affine-sync | False |" in capsys.readouterr().out
