"""One full-MNIST LeNet-5 epoch per library, each in its own process: time and peak RSS.

Peak resident memory can only be compared between separate processes, so each library
trains one epoch (the recipe of train_mnist.py, batches shared in order) in a fresh
interpreter that reports its own ``ru_maxrss``. The libraries run alternately, ``--repeats``
times each; medians are reported. Each child also reports the instruction sets it ran
(fastcnn's kernel copy, PyTorch's CPU capability), which the JSON's "machine" records.

    python bench/bench_epoch_memory.py [--threads 2] [--repeats 3] [--json out.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs in the child: one epoch with train_mnist's runner for the named library.
CHILD = """
import json, resource, sys, time
sys.path.insert(0, {here!r})
import fastcnn
from fastcnn import _isa
import train_mnist
args = train_mnist.parse_args(["--epochs", "1", "--data", {data!r}, "--threads", "{threads}",
                               *{limit!r}])
fastcnn.set_num_threads(args.threads)
train_loader, test_loader = train_mnist.load_data(args)
runner = train_mnist.FastcnnRun(args)
if {library!r} == "torch":
    import torch
    torch.set_num_threads(args.threads)
    runner = train_mnist.TorchRun(args, runner.model.state_dict())
torch = sys.modules.get("torch")
isa = {{"fastcnn_isa": _isa.active(), "fastcnn_isa_detail": _isa.describe(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability() if torch else None}}
batches = list(train_loader)
started = time.perf_counter()
runner.train_epoch(batches)
seconds = time.perf_counter() - started
accuracy = runner.test_accuracy(test_loader)
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "peak_rss_mib": peak_mib, "test_accuracy": accuracy,
                  **isa}}))
"""


def run_child(library, args):
    limit = ["--limit", str(args.limit)] if args.limit else []
    code = CHILD.format(
        here=HERE, data=args.data, threads=args.threads, library=library, limit=limit
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=3600
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/datasets/mnist")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, help="first N training images (a quick check)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args(argv)
    libraries = ["fastcnn"] if args.no_torch else ["fastcnn", "torch"]
    runs = {library: [] for library in libraries}
    for repeat in range(args.repeats):
        for library in libraries:
            runs[library].append(run_child(library, args))
            print(f"repeat {repeat + 1} {library}: {json.dumps(runs[library][-1])}", flush=True)
    summary = {
        library: {
            key: statistics.median(r[key] for r in results)
            for key in ("seconds", "peak_rss_mib", "test_accuracy")
        }
        for library, results in runs.items()
    }
    summary["threads"] = args.threads
    machine = machine_info(runs, args.threads)
    print(json.dumps(summary, indent=1))
    print(json.dumps(machine))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "summary": summary, "runs": runs}, f, indent=1)


def machine_info(runs, threads):
    """Date, CPU, capping variables, and the ISAs the children ran: fastcnn's kernel copy
    (the fastcnn child's; the torch child imports fastcnn too, for the data and weights)
    and PyTorch's CPU capability (the torch child's)."""
    from datetime import datetime, timezone

    from bench_kernels import ISA_ENV_VARS, _cpu_model

    def one(library, key):
        values = {r.get(key) for r in runs.get(library, ())}
        return values.pop() if len(values) == 1 else sorted(map(str, values)) or None

    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "fastcnn_isa": one("fastcnn", "fastcnn_isa"),
        "fastcnn_isa_detail": one("fastcnn", "fastcnn_isa_detail"),
        "torch_cpu_capability": one("torch", "torch_cpu_capability"),
        "isa_env": {name: os.environ.get(name) for name in ISA_ENV_VARS},
    }


if __name__ == "__main__":
    main()
