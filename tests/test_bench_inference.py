"""bench/bench_inference.py runs end to end at its smallest settings (one round: it measures
nothing here), its three implementations agree, and it measures without the optional
libraries."""

import json
from pathlib import Path

import pytest

import fastcnn

BENCH = Path(__file__).resolve().parent.parent / "bench"
SMALLEST = ["--rounds", "1", "--models", "lenet5", "--batches", "2", "--thread-counts", "1"]


@pytest.fixture
def bench_inference(monkeypatch):
    """The script as a module; the thread counts it sets are undone after the test."""
    if not (BENCH / "bench_inference.py").exists():  # tests run from an installed wheel
        pytest.skip("bench/ is not beside the tests")
    monkeypatch.syspath_prepend(str(BENCH))
    import bench_inference

    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:
        torch = None
    yield bench_inference
    fastcnn.set_num_threads(None)  # back to the default
    if torch is not None:
        torch.set_num_threads(torch_threads)


def run(bench_inference, tmp_path, *extra):
    out = tmp_path / "inference.json"
    bench_inference.main([*SMALLEST, "--json", str(out), *extra])
    return json.loads(out.read_text())


def test_three_implementations_agree_and_are_timed(bench_inference, tmp_path):
    for name in ("torch", "onnxruntime", "onnx"):
        pytest.importorskip(name)
    result = run(bench_inference, tmp_path)
    (row,) = result["rows"]
    assert (row["model"], row["batch"], row["threads"]) == ("lenet5", 2, 1)
    for name in ("fastcnn", "torch", "onnxruntime"):
        assert row[f"{name}_ms"] > 0
    assert row["onnxruntime/fastcnn"] == pytest.approx(row["onnxruntime_ms"] / row["fastcnn_ms"])
    assert row["torch_max_abs_diff"] < bench_inference.AGREEMENT_TOLERANCE
    assert row["onnxruntime_max_abs_diff"] < bench_inference.AGREEMENT_TOLERANCE
    assert result["machine"]["onnxruntime"] is not None


def test_without_torch_and_onnxruntime_fastcnn_alone(bench_inference, tmp_path, capsys):
    result = run(bench_inference, tmp_path, "--no-torch", "--no-onnxruntime")
    (row,) = result["rows"]
    assert row["fastcnn_ms"] > 0
    for key in ("torch_ms", "onnxruntime_ms", "torch/fastcnn", "onnxruntime_max_abs_diff"):
        assert row[key] is None
    assert "| LeNet-5 | 2 | 1 |" in capsys.readouterr().out  # the Markdown table at the end
