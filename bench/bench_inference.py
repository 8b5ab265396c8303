"""LeNet-5 and CIFAR-style net inference: fastcnn vs PyTorch vs onnxruntime on fastcnn's export.

onnxruntime runs fastcnn's own ONNX export of the same weights (fastcnn.onnx.export).

The three implementations compute the same function from the same weights:

- ``fastcnn``: the model in eval mode, ``model(x)``; threads: ``fastcnn.set_num_threads``.
- ``torch``: the PyTorch twin (bench_training.py's) with fastcnn's state dict, in eval mode,
  called under ``torch.inference_mode()``; threads: ``torch.set_num_threads``.
- ``onnxruntime``: an InferenceSession of ``fastcnn.onnx.export(model, ...)``, CPU
  execution provider, all graph optimizations, sequential execution, one inter-op thread;
  threads: ``intra_op_num_threads`` (one session per thread count: its pool is fixed when
  the session is made).

Models: ``lenet5`` (fastcnn.models.LeNet5, 1x28x28) and ``cifar`` (bench_training.py's
CIFAR-style net, 3x32x32), float32, at each of --batches and each of --thread-counts; the
three implementations of one case run at the same thread count, alternated round by round
after a warm-up with bench_kernels.py's time_rounds (settle pause, untimed call), and the
median over rounds is reported. Ratios are the other's time over fastcnn's (> 1: fastcnn is
faster). Before timing a case, its three outputs on the timed batch are compared: each row
records the largest absolute difference of torch's and of onnxruntime's from fastcnn's.

onnxruntime's kernels choose their instruction set from the CPU: run_all.py's --isa caps
fastcnn and PyTorch, not onnxruntime. --no-book is accepted, as by every script; there is
no NumPy-book baseline here.

Run:  python bench/bench_inference.py [--thread-counts 1 2] [--rounds 7] [--batches 1 16 256]
                                      [--models lenet5 cifar] [--json out.json]
"""

import importlib.metadata
import io
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # siblings in bench/
from bench_kernels import bench_main, time_rounds  # noqa: E402
from bench_training import (  # noqa: E402
    INPUT_SHAPES,
    cifar_net,
    load_fastcnn_weights,
    torch_lenet_net,
)
from run_all import inference_table  # noqa: E402

import fastcnn  # noqa: E402
import fastcnn.onnx  # noqa: E402

# Each model in fastcnn (from a NumPy Generator) and in torch.nn (the same state-dict keys).
FASTCNN_NETS = {
    "lenet5": lambda rng: fastcnn.models.LeNet5(rng=rng),
    "cifar": lambda rng: cifar_net(fastcnn.nn, rng=rng),
}
TORCH_NETS = {"lenet5": torch_lenet_net, "cifar": cifar_net}
IMPLEMENTATIONS = ("fastcnn", "torch", "onnxruntime")
# float32 sums in another order differ by ~1e-6 on these logits; 1e-3 means another function
AGREEMENT_TOLERANCE = 1e-3


def import_onnxruntime(skip):
    """onnxruntime, or None (skipped, or it or onnx, which the export needs, not installed)."""
    if skip:
        return None
    try:
        import onnxruntime
    except ImportError:
        print("onnxruntime not installed: no onnxruntime columns")
        return None
    try:
        import onnx  # noqa: F401
    except ImportError:
        print("onnx not installed (fastcnn.onnx.export needs it): no onnxruntime columns")
        return None
    return onnxruntime


def package_versions(_args):
    """The versions of onnxruntime and onnx, for the machine record (None: not installed)."""

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {"onnxruntime": version("onnxruntime"), "onnx": version("onnx")}


def fastcnn_infer(model):
    """``model`` in eval mode: called on a batch, it is the timed inference."""
    model.eval()
    return model


def torch_infer(torch, model_name, state_dict):
    model = load_fastcnn_weights(torch, TORCH_NETS[model_name](torch.nn), state_dict)
    model.eval()

    def infer(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return infer


def onnx_bytes(model, model_name):
    """fastcnn's ONNX export of ``model`` (dynamic batch axis, so one export serves all)."""
    buffer = io.BytesIO()
    example = np.zeros((1, *INPUT_SHAPES[model_name]), dtype=np.float32)
    fastcnn.onnx.export(model, example, buffer)
    return buffer.getvalue()


def onnxruntime_infer(ort, model_bytes, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def infer(x):
        return session.run(None, {input_name: x})[0]

    return infer


def set_threads(torch, threads):
    """fastcnn and PyTorch at ``threads`` (onnxruntime's count is its session's)."""
    fastcnn.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)


def agreement(outputs, case):
    """The largest |difference| of each implementation's output from fastcnn's; a loud
    warning for any above AGREEMENT_TOLERANCE (its ratio would compare other work)."""
    reference = np.asarray(outputs["fastcnn"])
    diffs = {}
    for name in IMPLEMENTATIONS[1:]:
        if name not in outputs:
            diffs[f"{name}_max_abs_diff"] = None
            continue
        diff = float(np.abs(np.asarray(outputs[name]) - reference).max())
        diffs[f"{name}_max_abs_diff"] = diff
        if diff > AGREEMENT_TOLERANCE:
            print(
                f"WARNING: {case}: {name}'s output differs from fastcnn's by {diff:.3g} "
                f"(> {AGREEMENT_TOLERANCE}): they do not compute the same function, so this "
                "row's ratio compares different work",
                file=sys.stderr,
                flush=True,
            )
    return diffs


def result_row(model_name, batch, threads, times, diffs):
    fc = times["fastcnn"]
    row = {"model": model_name, "batch": batch, "threads": threads}
    for name in IMPLEMENTATIONS:
        t = times.get(name)
        row[f"{name}_ms"] = None if t is None else t * 1e3
    for name in IMPLEMENTATIONS[1:]:
        t = times.get(name)
        row[f"{name}/fastcnn"] = None if t is None else t / fc
    row["fastcnn_images_per_s"] = batch / fc
    return {**row, **diffs}


def run_case(model_name, batch, threads, infers, rounds, rng):
    """Time one (model, batch, threads) case of the implementations in ``infers``."""
    x = rng.random((batch, *INPUT_SHAPES[model_name]), dtype=np.float32)
    case = f"{model_name} batch {batch}, {threads} thread(s)"
    diffs = agreement({name: infer(x) for name, infer in infers.items()}, case)
    times = time_rounds(
        {name: (lambda infer=infer: infer(x)) for name, infer in infers.items()}, rounds
    )
    return result_row(model_name, batch, threads, times, diffs)


def run(args, torch):
    ort = import_onnxruntime(args.no_onnxruntime)
    thread_counts = args.thread_counts or sorted({1, args.threads})
    rng = np.random.default_rng(0)
    rows = []
    for model_name in args.models:
        model = fastcnn_infer(FASTCNN_NETS[model_name](np.random.default_rng(0)))
        shared = {"fastcnn": model}
        if torch is not None:
            shared["torch"] = torch_infer(torch, model_name, model.state_dict())
        model_bytes = None if ort is None else onnx_bytes(model, model_name)
        for threads in thread_counts:
            set_threads(torch, threads)
            infers = dict(shared)
            if ort is not None:
                infers["onnxruntime"] = onnxruntime_infer(ort, model_bytes, threads)
            for batch in args.batches:
                rows.append(run_case(model_name, batch, threads, infers, args.rounds, rng))
                print(json.dumps({k: _short(v) for k, v in rows[-1].items()}), flush=True)
    print()
    print("\n".join(inference_table({"rows": rows})))
    return rows


def _short(value):
    return float(f"{value:.4g}") if isinstance(value, float) else value


def main(argv=None):
    def cases(parser):
        parser.add_argument(
            "--models", nargs="+", choices=sorted(FASTCNN_NETS), default=["lenet5", "cifar"]
        )
        parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256])
        parser.add_argument(
            "--thread-counts",
            type=int,
            nargs="+",
            help="thread counts, each case runs at each (default: 1 and --threads)",
        )
        parser.add_argument("--no-onnxruntime", action="store_true")

    bench_main(__doc__.splitlines()[0], run, argv, [cases], package_versions)


if __name__ == "__main__":
    main()
