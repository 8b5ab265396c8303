"""Kernel microbenchmarks: fastcnn vs PyTorch CPU (same thread count) vs the NumPy book.

For each case the implementations are run alternately in rounds (warm-up first), each timing
taking the median over rounds, so slow drifts of a noisy machine hit all of them alike.
Columns: median ms, GFLOP/s (convolutions), and ratio = torch time / fastcnn time (> 1: fastcnn
is faster). Cases: LeNet-5's convolutions and pools (batch 256), two VGG-size 3x3 layers,
the three 3x3 convolutions of bench_training.py's CIFAR-style net (batch 64) and two of
ResNet-20's BatchNorm2d layers in training (batch 64). The JSON's "machine" records the
instruction sets that ran (fastcnn's kernel copy, PyTorch's CPU capability: capped by
FASTCNN_MAX_CPU_ISA, ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY).
Run:  python bench/bench_kernels.py [--threads 2] [--rounds 7] [--only CASE ...] [--json out.json]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # numpy_book beside this file
import numpy_book  # noqa: E402

import fastcnn  # noqa: E402
from fastcnn import functional as F  # noqa: E402

CONV_CASES = {
    "lenet-conv1": ((256, 1, 28, 28), 6, 5, 2),
    "lenet-conv2": ((256, 6, 14, 14), 16, 5, 0),
    "vgg-64": ((32, 64, 32, 32), 64, 3, 1),
    "vgg-128": ((16, 128, 16, 16), 128, 3, 1),
    # the three convolutions of bench_training.py's CIFAR-style net, at its batch of 64
    "cifar-conv1": ((64, 3, 32, 32), 32, 3, 1),
    "cifar-conv2": ((64, 32, 16, 16), 64, 3, 1),
    "cifar-conv3": ((64, 64, 8, 8), 128, 3, 1),
}
# depthwise 3x3 convolutions (groups = channels), the networks issue's case and its
# strided twin: (input shape, filters, kernel, padding, stride); no NumPy-book run (it has
# no groups)
DEPTHWISE_CASES = {
    "depthwise-64": ((32, 64, 32, 32), 64, 3, 1, 1),
    "depthwise-64-s2": ((32, 64, 32, 32), 64, 3, 1, 2),
}
POOL_CASES = {"lenet-pool1": (256, 6, 28, 28), "lenet-pool2": (256, 16, 10, 10)}
# ResNet-20's BatchNorm2d layers in training (batch 64): the first stage's, the last stage's
BATCH_NORM_CASES = {"resnet-bn16": (64, 16, 32, 32), "resnet-bn64": (64, 64, 8, 8)}


def conv_flops(x_shape, k, f, pad, stride=1, groups=1):
    n, c, h, w = x_shape
    oh, ow = (h + 2 * pad - f) // stride + 1, (w + 2 * pad - f) // stride + 1
    return 2.0 * n * k * (c // groups) * f * f * oh * ow


def time_rounds(impls, rounds, min_seconds=0.1, settle_seconds=0.2):
    """Median seconds per call of each impl, alternating them round by round.

    Between two implementations the machine settles for ``settle_seconds``: thread pools
    that spin after their work (NumPy's OpenBLAS, PyTorch's OpenMP) otherwise keep a core
    busy and slow whichever implementation runs next. After the pause each implementation
    is called once untimed, so that its own thread pool is awake again when timing starts:
    what is timed is the steady state of a loop (a training loop's), not a wake-up.
    """
    loops = {}
    for name, fn in impls.items():
        fn()  # warm-up (allocations, thread pools)
        start = time.perf_counter()
        fn()
        once = time.perf_counter() - start
        loops[name] = max(1, int(min_seconds / max(once, 1e-6)))
    samples = {name: [] for name in impls}
    for _ in range(rounds):
        for name, fn in impls.items():
            time.sleep(settle_seconds)
            fn()
            start = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / loops[name])
    return {name: statistics.median(s) for name, s in samples.items()}


def conv_impls(x, w, b, pad, torch, with_book, stride=1, groups=1):
    """forward, forward+backward, forward+backward without dx for each implementation."""
    impls = {}
    conv = {"stride": stride, "padding": pad, "groups": groups}
    out = F.conv2d(x, w, b, **conv)
    g = np.ones_like(out)

    def fc_fb(need_dx):
        def run():
            F.conv2d(x, w, b, **conv)
            F.conv2d_backward(g, x, w, **conv, input_grad=need_dx)

        return run

    impls["fastcnn fwd"] = lambda: F.conv2d(x, w, b, **conv)
    impls["fastcnn fwd+bwd"] = fc_fb(True)
    impls["fastcnn fwd+bwd no-dx"] = fc_fb(False)
    if torch is not None:
        tw = torch.tensor(w, requires_grad=True)
        tb = torch.tensor(b, requires_grad=True)
        tg = torch.tensor(g)

        def t_fb(need_dx):
            def run():
                tx = torch.from_numpy(x).requires_grad_(need_dx)
                torch.nn.functional.conv2d(tx, tw, tb, **conv).backward(tg)
                tw.grad = tb.grad = None

            return run

        def t_fwd():
            with torch.no_grad():
                torch.nn.functional.conv2d(torch.from_numpy(x), tw, tb, **conv)

        impls["torch fwd"] = t_fwd
        impls["torch fwd+bwd"] = t_fb(True)
        impls["torch fwd+bwd no-dx"] = t_fb(False)
    if with_book:
        layer = numpy_book.Convolution(w, b, 1, pad)

        def book_fb(need_dx):
            def run():
                layer.forward(x)
                layer.backward(g, need_dx)

            return run

        impls["numpy-book fwd"] = lambda: layer.forward(x)
        impls["numpy-book fwd+bwd"] = book_fb(True)
        impls["numpy-book fwd+bwd no-dx"] = book_fb(False)
    return impls


def pool_impls(x, torch, with_book):
    impls = {}

    def fc():
        out, idx = F.max_pool2d(x, 2, return_indices=True)
        F.max_pool2d_backward(out, idx, x.shape)

    impls["fastcnn fwd+bwd"] = fc
    if torch is not None:

        def tc():
            tx = torch.from_numpy(x).requires_grad_(True)
            out = torch.nn.functional.max_pool2d(tx, 2)
            out.backward(out.detach())

        impls["torch fwd+bwd"] = tc
    if with_book:
        layer = numpy_book.Pooling(2, 2)

        def book():
            layer.backward(layer.forward(x))

        impls["numpy-book fwd+bwd"] = book
    return impls


def batch_norm_impls(x, torch):
    """Training-mode BatchNorm2d forward + backward (batch statistics, running update)."""
    grad = np.ones_like(x)
    layer = fastcnn.nn.BatchNorm2d(x.shape[1])

    def fc():
        layer(x)
        layer.backward(grad)

    impls = {"fastcnn fwd+bwd": fc}
    if torch is not None:
        t_layer, tg = torch.nn.BatchNorm2d(x.shape[1]), torch.from_numpy(grad)

        def tc():
            t_layer(torch.from_numpy(x).requires_grad_(True)).backward(tg)

        impls["torch fwd+bwd"] = tc
    return impls


def unfold_impls(x, f, pad, with_book):
    col = F.im2col(x, f, 1, pad)
    impls = {
        "fastcnn im2col": lambda: F.im2col(x, f, 1, pad),
        "fastcnn col2im": lambda: F.col2im(col, x.shape, f, 1, pad),
    }
    if with_book:
        impls["numpy-book im2col"] = lambda: numpy_book.im2col(x, f, f, 1, pad)
        impls["numpy-book col2im"] = lambda: numpy_book.col2im(col, x.shape, f, f, 1, pad)
    return impls


def ratio_rows(case, times, flops=None):
    """One row per measure: fastcnn ms, torch ms, numpy-book ms, ratios, GFLOP/s."""
    rows = []
    measures = sorted({name.split(" ", 1)[1] for name in times})
    for measure in measures:
        row = {"case": case, "measure": measure}
        for impl in ("fastcnn", "torch", "numpy-book"):
            t = times.get(f"{impl} {measure}")
            row[f"{impl}_ms"] = None if t is None else t * 1e3
        fc, tt, bk = row["fastcnn_ms"], row["torch_ms"], row["numpy-book_ms"]
        row["torch/fastcnn"] = tt / fc if fc and tt else None
        row["book/fastcnn"] = bk / fc if fc and bk else None
        if flops and fc:
            scale = {"fwd": 1, "fwd+bwd": 3, "fwd+bwd no-dx": 2}.get(measure, 0)
            row["fastcnn_gflops"] = scale * flops / (fc * 1e-3) / 1e9 if scale else None
        rows.append(row)
    return rows


def run(args, torch):
    all_cases = [*CONV_CASES, *DEPTHWISE_CASES, *POOL_CASES, *BATCH_NORM_CASES]
    unknown = set(args.only or ()) - set(all_cases)
    if unknown:
        raise SystemExit(f"unknown case(s) {sorted(unknown)}: the cases are {', '.join(all_cases)}")
    rng = np.random.default_rng(0)
    rows, printed = [], 0
    print(
        f"{'case':<12} {'measure':<22} {'fastcnn ms':>10} {'torch ms':>9} "
        f"{'book ms':>9} {'torch/fc':>8} {'book/fc':>8} {'GFLOP/s':>8}"
    )
    for case, (shape, k, f, pad) in CONV_CASES.items():
        if args.only and case not in args.only:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        w = (rng.standard_normal((k, shape[1], f, f)) * 0.1).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        times = time_rounds(conv_impls(x, w, b, pad, torch, not args.no_book), args.rounds)
        rows += ratio_rows(case, times, conv_flops(shape, k, f, pad))
        if case.startswith("lenet"):
            times = time_rounds(unfold_impls(x, f, pad, not args.no_book), args.rounds)
            rows += ratio_rows(case, times)
        printed = print_rows(rows, printed)
    for case, (shape, k, f, pad, stride) in DEPTHWISE_CASES.items():
        if args.only and case not in args.only:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        w = (rng.standard_normal((k, 1, f, f)) * 0.1).astype(np.float32)
        b = rng.standard_normal(k).astype(np.float32)
        impls = conv_impls(x, w, b, pad, torch, False, stride=stride, groups=shape[1])
        times = time_rounds(impls, args.rounds)
        rows += ratio_rows(case, times, conv_flops(shape, k, f, pad, stride, shape[1]))
        printed = print_rows(rows, printed)
    for case, shape in POOL_CASES.items():
        if args.only and case not in args.only:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        times = time_rounds(pool_impls(x, torch, not args.no_book), args.rounds)
        rows += ratio_rows(case, times)
        printed = print_rows(rows, printed)
    for case, shape in BATCH_NORM_CASES.items():
        if args.only and case not in args.only:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        rows += ratio_rows(case, time_rounds(batch_norm_impls(x, torch), args.rounds))
        printed = print_rows(rows, printed)
    return rows


def fmt(value, spec):
    width = int(spec.split(".")[0])
    return f"{'-':>{width}}" if value is None else format(value, spec)


def print_rows(rows, printed):
    """Print rows[printed:]; return how many rows are printed now."""
    for r in rows[printed:]:
        print(
            f"{r['case']:<12} {r['measure']:<22} {fmt(r['fastcnn_ms'], '10.3f')} "
            f"{fmt(r['torch_ms'], '9.3f')} {fmt(r['numpy-book_ms'], '9.3f')} "
            f"{fmt(r['torch/fastcnn'], '8.2f')} {fmt(r['book/fastcnn'], '8.1f')} "
            f"{fmt(r.get('fastcnn_gflops'), '8.1f')}",
            flush=True,
        )
    return len(rows)


# The environment variables that cap the instruction set of fastcnn's kernels and of
# PyTorch's (run_all.py --isa sets them for the benchmarks it starts).
ISA_ENV_VARS = ("FASTCNN_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def isa_info(torch):
    """The instruction sets that actually run: fastcnn's kernel copy, PyTorch's ATen CPU
    capability (None without torch), and the capping variables as this process saw them."""
    from fastcnn import _isa

    return {
        "fastcnn_isa": _isa.active(),
        "fastcnn_isa_detail": _isa.describe(),
        "fastcnn_isa_available": _isa.available(),
        "torch_cpu_capability": (
            torch.backends.cpu.get_cpu_capability() if torch is not None else None
        ),
        "isa_env": {name: os.environ.get(name) for name in ISA_ENV_VARS},
    }


def machine_info(torch, threads):
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastcnn": fastcnn.__version__,
        "torch": getattr(torch, "__version__", None),
        **isa_info(torch),
    }


def _cpu_model():
    """The CPU's model name: /proc/cpuinfo's 'model name', else lscpu's 'Model name'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import subprocess

        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor()


def import_torch(skip, threads):
    """torch at the given thread count, or None (skipped, or not installed)."""
    if skip:
        return None
    try:
        import torch
    except ImportError:
        print("torch not installed: no torch columns")
        return None
    torch.set_num_threads(threads)
    return torch


def bench_main(description, run, argv, add_arguments=(), more_machine_info=None):
    """The shared command line of the benchmarks: parse, set threads, run, print, save.

    ``more_machine_info(args)``, if given, returns entries added to the machine record (a
    benchmark's own libraries, say), so that they are saved with the results."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7, help="rounds (median taken), >= 5")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-book", action="store_true", help="skip the NumPy-book baseline")
    parser.add_argument("--json", help="write results here")
    for add in add_arguments:
        add(parser)
    args = parser.parse_args(argv)
    fastcnn.set_num_threads(args.threads)
    torch = import_torch(args.no_torch, args.threads)
    info = machine_info(torch, args.threads)
    if more_machine_info is not None:
        info.update(more_machine_info(args))
    print(json.dumps(info))
    print(
        f"fastcnn kernel ISA: {info['fastcnn_isa_detail']}; torch CPU capability: "
        f"{info['torch_cpu_capability']}",
        flush=True,
    )
    rows = run(args, torch)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=1)


def main(argv=None):
    def only(parser):
        parser.add_argument("--only", nargs="*", help="case names to run (default: all)")

    bench_main(__doc__.splitlines()[0], run, argv, [only])


if __name__ == "__main__":
    main()
