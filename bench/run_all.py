"""Run every fastcnn benchmark, each in its own process, and write a Markdown report.

    python bench/run_all.py [--isa native|avx2|avx512] [--out bench/results] [--threads 2]
                            [--quick | --smoke]

Writes OUT/ISA/kernels.json, OUT/ISA/training.json, OUT/ISA/inference.json,
OUT/ISA/epoch_memory.json and OUT/ISA/report.md (the tables of bench/README.md, with the
machine, date and instruction sets of this run), ISA being the --isa given, so runs at
different ISAs do not overwrite each other.

--isa caps the instruction set of fastcnn's kernels and of PyTorch's, in the environment
of the benchmark processes (set before either library is imported):

    native  nothing capped: each library runs the best this CPU has (and the capping
            variables are removed from the environment, should the shell have any)
    avx2    FASTCNN_MAX_CPU_ISA=avx2, ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2
    avx512  FASTCNN_MAX_CPU_ISA=avx512, ONEDNN_MAX_CPU_ISA=AVX512_CORE,
            ATEN_CPU_CAPABILITY=avx512

A cap can lower the instruction set, not raise it: before running anything, run_all checks
/proc/cpuinfo's flags, and a probe process with the benchmarks' environment checks that
fastcnn and PyTorch report the ISA asked for; it refuses (e.g. --isa avx512 on a CPU
without AVX-512) otherwise. (PyTorch's report alone proves nothing: it echoes
ATEN_CPU_CAPABILITY even above what the CPU has.) onnxruntime, which bench_inference.py
also runs, has no such cap: its kernels use the best this CPU has, and the report says so.

--smoke checks that everything runs, and measures nothing: 2 rounds, one kernel case,
small batches, inference at --threads only, 500 MNIST images; its results go to a
temporary directory unless --out is given.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# --isa -> the environment of the benchmark processes: fastcnn's cap and PyTorch's
# (oneDNN's convolutions, ATen's vectorized kernels). None: the variable is removed.
ISA_ENV = {
    "native": {
        "FASTCNN_MAX_CPU_ISA": None,
        "ONEDNN_MAX_CPU_ISA": None,
        "ATEN_CPU_CAPABILITY": None,
    },
    "avx2": {
        "FASTCNN_MAX_CPU_ISA": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
    },
    "avx512": {
        "FASTCNN_MAX_CPU_ISA": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "ATEN_CPU_CAPABILITY": "avx512",
    },
}
# what fastcnn._isa.active() and torch.backends.cpu.get_cpu_capability() must then say
EXPECTED = {"avx2": ("avx2", "AVX2"), "avx512": ("avx512", "AVX512")}
# CPU flags each capped ISA needs (fastcnn's copies: csrc/cpu_dispatch.h). Checked as well
# as fastcnn's own CPU check because PyTorch's answer is no check: torch 2.13 reports
# get_cpu_capability() == "AVX512" with ATEN_CPU_CAPABILITY=avx512 on a CPU without AVX-512.
REQUIRED_FLAGS = {
    "avx2": ("avx2", "fma"),
    "avx512": ("avx512f", "avx512bw", "avx512dq", "avx512vl"),
}
ISA_NAMES = {"avx2": "AVX2 + FMA", "avx512": "AVX-512 (F, BW, DQ, VL)"}
# the ISA above each cap that onnxruntime (not capped) would use where the CPU has it
ISA_ABOVE = {"avx2": "avx512"}

PROBE = """
import json, sys
from fastcnn import _isa
try:
    import torch
    capability = torch.backends.cpu.get_cpu_capability()
except ImportError:
    capability = None
print(json.dumps({"fastcnn": _isa.active(), "available": _isa.available(),
                  "torch": capability}))
"""


def isa_environment(isa):
    """os.environ with the caps of ``isa`` set (or, for native, removed)."""
    env = dict(os.environ)
    for name, value in ISA_ENV[isa].items():
        if value is None:
            if env.pop(name, None) is not None:
                print(f"--isa {isa}: removed {name} from the benchmarks' environment")
        else:
            env[name] = value
    return env


def cpuinfo_field(name):
    """The first /proc/cpuinfo line's value for ``name`` ("flags", "model name"), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags():
    flags = cpuinfo_field("flags")
    return None if flags is None else set(flags.split())


def cpu_has(isa):
    """Whether /proc/cpuinfo lists every flag ``isa`` needs (False if it cannot be read)."""
    flags = cpu_flags()
    return flags is not None and all(f in flags for f in REQUIRED_FLAGS[isa])


def check_isa(isa, env):
    """What a process with ``env`` runs ({"fastcnn", "available", "torch"}); exit with a
    message if that is not the ISA asked for (a cap cannot raise the ISA)."""
    refusal = (
        f"run_all: refusing --isa {isa}: {{}}. A cap can only lower the instruction "
        "set below what the CPU has, not raise it: use --isa native, or a lower "
        "--isa, on this machine."
    )
    flags = cpu_flags()
    missing = [f for f in REQUIRED_FLAGS.get(isa, ()) if flags is not None and f not in flags]
    if missing:  # before the probe: a library forced above the CPU may crash on import
        sys.exit(
            refusal.format(
                f"this CPU ({cpu_model()}) has no {ISA_NAMES[isa]}: the flags "
                f"of /proc/cpuinfo lack {', '.join(missing)}"
            )
        )
    # from bench/, so that it imports the fastcnn the benchmark scripts import (python -c
    # puts the working directory first on sys.path, as a script puts its own directory)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, cwd=HERE
    )
    if done.returncode != 0:
        sys.exit(f"run_all: --isa {isa}: the probe process failed:\n{done.stderr}")
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    if isa not in EXPECTED:
        return probe
    want_fastcnn, want_torch = EXPECTED[isa]
    problems = []
    if probe["fastcnn"] != want_fastcnn:
        problems.append(
            f"fastcnn would run its {probe['fastcnn']!r} kernels (this CPU runs: "
            f"{', '.join(probe['available'])})"
        )
    if probe["torch"] is not None and probe["torch"] != want_torch:
        problems.append(f"PyTorch's CPU capability would be {probe['torch']!r}, not {want_torch!r}")
    if problems:
        sys.exit(refusal.format("; ".join(problems)))
    return probe


def cpu_model():
    return cpuinfo_field("model name") or "unknown CPU"


def run(script, out_json, extra, env):
    command = [sys.executable, os.path.join(HERE, script), "--json", out_json, *extra]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=env)
    with open(out_json) as f:
        return json.load(f)


def fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def kernel_table(result):
    lines = [
        "| case | measure | fastcnn ms | torch ms | numpy-book ms | torch/fastcnn | "
        "book/fastcnn | fastcnn GFLOP/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['case']} | {r['measure']} | {fmt(r['fastcnn_ms'])} | {fmt(r['torch_ms'])} | "
            f"{fmt(r['numpy-book_ms'])} | {fmt(r['torch/fastcnn'])} | "
            f"{fmt(r['book/fastcnn'], '.1f')} | {fmt(r.get('fastcnn_gflops'), '.1f')} |"
        )
    return lines


MODEL_NAMES = {
    "lenet5": "LeNet-5",
    "cifar": "CIFAR-style",
    "resnet20": "ResNet-20",
    "mobilenet": "MobileNetCIFAR",
}


def training_table(result):
    lines = [
        "| model | batch | measure | fastcnn ms | torch ms | numpy-book ms | "
        "torch/fastcnn | book/fastcnn | fastcnn 1-thread ms | 2 threads vs 1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        model = r.get("model", "lenet5")
        lines.append(
            f"| {MODEL_NAMES.get(model, model)} | {r['batch']} | {r['measure']} | "
            f"{fmt(r['fastcnn_ms'])} | {fmt(r['torch_ms'])} | "
            f"{fmt(r['numpy-book_ms'])} | {fmt(r['torch/fastcnn'])} | "
            f"{fmt(r['numpy-book/fastcnn'], '.1f')} | {fmt(r['fastcnn-1thread_ms'])} | "
            f"{fmt(r['fastcnn-1thread/fastcnn'])} |"
        )
    return lines


def inference_table(result):
    """bench_inference.py's rows as a Markdown table (that script prints it too)."""
    lines = [
        "| model | batch | threads | fastcnn ms | torch ms | onnxruntime ms | "
        "onnxruntime/fastcnn | torch/fastcnn | fastcnn images/s | "
        "max diff torch | max diff onnxruntime |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {MODEL_NAMES.get(r['model'], r['model'])} | {r['batch']} | {r['threads']} | "
            f"{fmt(r['fastcnn_ms'], '.3f')} | {fmt(r['torch_ms'], '.3f')} | "
            f"{fmt(r['onnxruntime_ms'], '.3f')} | {fmt(r['onnxruntime/fastcnn'])} | "
            f"{fmt(r['torch/fastcnn'])} | {fmt(r['fastcnn_images_per_s'], '.0f')} | "
            f"{fmt(r['torch_max_abs_diff'], '.1e')} | {fmt(r['onnxruntime_max_abs_diff'], '.1e')} |"
        )
    return lines


def onnxruntime_lines(isa, result):
    """Which onnxruntime ran, and that --isa does not cap it."""
    machine = result["machine"]
    if all(r["onnxruntime_ms"] is None for r in result["rows"]):
        return [
            f"No onnxruntime columns: onnxruntime {machine.get('onnxruntime') or 'missing'}, "
            f"onnx {machine.get('onnx') or 'missing'} (the export needs both)."
        ]
    line = (
        f"onnxruntime {machine['onnxruntime']} (onnx {machine['onnx']}) runs fastcnn's ONNX "
        "export; --isa does not cap it: its kernels use the best this CPU has"
    )
    above = ISA_ABOVE.get(isa)
    if above is not None and cpu_has(above):
        line += f", here {ISA_NAMES[above]}, above the --isa {isa} of fastcnn and PyTorch"
    return [line + "."]


def memory_table(result):
    lines = [
        "| library | epoch s | peak RSS MiB | test accuracy after 1 epoch |",
        "|---|---|---|---|",
    ]
    for library in ("fastcnn", "torch"):
        r = result["summary"].get(library)
        if r:
            lines.append(
                f"| {library} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
                f"{100 * r['test_accuracy']:.2f}% |"
            )
    return lines


def isa_lines(isa, results):
    """The report's account of the instruction sets: what was asked, what each benchmark's
    processes ran (fastcnn's kernel copy, PyTorch's CPU capability), and the caps."""

    def named(value):  # epoch_memory gives a list when its children disagreed
        return (
            None
            if value is None
            else "/".join(map(str, value))
            if isinstance(value, list)
            else str(value)
        )

    ran = {
        name: (
            named(r["machine"].get("fastcnn_isa")),
            named(r["machine"].get("torch_cpu_capability")),
        )
        for name, r in results.items()
    }
    fastcnn_isas = {f for f, _ in ran.values()}
    torch_isas = {t for _, t in ran.values() if t is not None}
    caps = ", ".join(f"{k}={v}" for k, v in ISA_ENV[isa].items() if v) or "no caps set"
    detail = results["kernels"]["machine"].get("fastcnn_isa_detail")
    lines = [
        f"Instruction sets (`run_all.py --isa {isa}`: {caps}): fastcnn's kernels ran "
        f"**{'/'.join(sorted(map(str, fastcnn_isas)))}** (show_config's kernel ISA: "
        f"`{detail}`); PyTorch's CPU "
        f"capability was **{'/'.join(sorted(torch_isas)) or '-'}**."
    ]
    if len(fastcnn_isas) > 1 or len(torch_isas) > 1:
        lines.append("")
        lines.append(
            "**Warning: the benchmarks did not all run the same instruction sets:** "
            + "; ".join(f"{n}: fastcnn {f}, torch {t}" for n, (f, t) in ran.items())
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--isa",
        choices=sorted(ISA_ENV),
        default="native",
        help="cap fastcnn's and PyTorch's instruction set (default: native)",
    )
    parser.add_argument(
        "--out",
        help="results root; this run writes OUT/ISA/ (default: "
        "bench/results, or a temporary directory with --smoke)",
    )
    parser.add_argument("--threads", type=int, default=2)
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="5 rounds, one epoch repeat")
    speed.add_argument(
        "--smoke",
        action="store_true",
        help="check that everything runs: tiny cases, no measurement",
    )
    args = parser.parse_args(argv)
    root = args.out or (
        os.path.join(tempfile.gettempdir(), "fastcnn-bench-smoke")
        if args.smoke
        else os.path.join(HERE, "results")
    )
    out = os.path.join(root, args.isa)
    env = isa_environment(args.isa)
    probe = check_isa(args.isa, env)
    print(
        f"--isa {args.isa}: fastcnn runs {probe['fastcnn']}, PyTorch's CPU capability is "
        f"{probe['torch']}; writing {out}",
        flush=True,
    )
    os.makedirs(out, exist_ok=True)
    # 11 rounds: on the noisy 2-vCPU VM medians of 7 still moved ratios by 10-20% run to run
    rounds = ["--rounds", "2" if args.smoke else "5" if args.quick else "11"]
    threads = ["--threads", str(args.threads)]
    kernel_args, training_args, inference_args, memory_args = [], [], [], []
    if args.smoke:
        kernel_args = ["--only", "cifar-conv3", "--no-book"]
        training_args = ["--batches", "16", "--cifar-batches", "8", "--cifar-infer-batch", "16"]
        inference_args = ["--batches", "1", "16", "--thread-counts", str(args.threads)]
        memory_args = ["--limit", "500"]
    results = {}
    results["kernels"] = run(
        "bench_kernels.py", os.path.join(out, "kernels.json"), threads + rounds + kernel_args, env
    )
    results["training"] = run(
        "bench_training.py",
        os.path.join(out, "training.json"),
        threads + rounds + training_args,
        env,
    )
    results["inference"] = run(
        "bench_inference.py",
        os.path.join(out, "inference.json"),
        threads + rounds + inference_args,
        env,
    )
    results["epoch_memory"] = run(
        "bench_epoch_memory.py",
        os.path.join(out, "epoch_memory.json"),
        threads + ["--repeats", "1" if args.quick or args.smoke else "3"] + memory_args,
        env,
    )
    machine = results["kernels"]["machine"]
    report = [
        *(
            ["**Smoke run (`--smoke`): tiny cases, 2 rounds; these are not measurements.**", ""]
            if args.smoke
            else []
        ),
        f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores), "
        f"{args.threads} threads for every library; Python {machine['python']}, NumPy "
        f"{machine['numpy']}, fastcnn {machine['fastcnn']}, torch {machine['torch']}.",
        "",
        *isa_lines(args.isa, results),
        "",
        "Kernels (float32):",
        "",
        *kernel_table(results["kernels"]),
        "",
        "Training step and inference (LeNet-5; CIFAR-style net: bench_training.py):",
        "",
        *training_table(results["training"]),
        "",
        "Inference (float32, eval mode): fastcnn vs PyTorch vs onnxruntime on fastcnn's ONNX "
        "export of the same weights, every library at the row's thread count "
        "(bench_inference.py):",
        "",
        *onnxruntime_lines(args.isa, results["inference"]),
        "",
        *inference_table(results["inference"]),
        "",
        "One full-MNIST LeNet-5 epoch (train_mnist.py's recipe), each library in its own process:",
        "",
        *memory_table(results["epoch_memory"]),
        "",
    ]
    path = os.path.join(out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(report))
    print("\n".join(report))
    print(f"report written to {path}")


if __name__ == "__main__":
    main()
