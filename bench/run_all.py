"""Run every fastcnn benchmark, each in its own process, and write a Markdown report.

    python bench/run_all.py [--out bench/results] [--threads 2] [--quick]

Writes OUT/kernels.json, OUT/training.json, OUT/epoch_memory.json and OUT/report.md (the
tables of bench/README.md, with the machine and date of this run).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(script, out_json, extra):
    command = [sys.executable, os.path.join(HERE, script), "--json", out_json, *extra]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    with open(out_json) as f:
        return json.load(f)


def fmt(value, spec=".2f"):
    return "-" if value is None else format(value, spec)


def kernel_table(result):
    lines = ["| case | measure | fastcnn ms | torch ms | numpy-book ms | torch/fastcnn | "
             "book/fastcnn | fastcnn GFLOP/s |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['case']} | {r['measure']} | {fmt(r['fastcnn_ms'])} | {fmt(r['torch_ms'])} | "
            f"{fmt(r['numpy-book_ms'])} | {fmt(r['torch/fastcnn'])} | "
            f"{fmt(r['book/fastcnn'], '.1f')} | {fmt(r.get('fastcnn_gflops'), '.1f')} |"
        )
    return lines


def training_table(result):
    lines = ["| batch | measure | fastcnn ms | torch ms | numpy-book ms | torch/fastcnn | "
             "book/fastcnn | fastcnn 1-thread ms | 2 threads vs 1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['batch']} | {r['measure']} | {fmt(r['fastcnn_ms'])} | {fmt(r['torch_ms'])} | "
            f"{fmt(r['numpy-book_ms'])} | {fmt(r['torch/fastcnn'])} | "
            f"{fmt(r['numpy-book/fastcnn'], '.1f')} | {fmt(r['fastcnn-1thread_ms'])} | "
            f"{fmt(r['fastcnn-1thread/fastcnn'])} |"
        )
    return lines


def memory_table(result):
    lines = ["| library | epoch s | peak RSS MiB | test accuracy after 1 epoch |",
             "|---|---|---|---|"]
    for library in ("fastcnn", "torch"):
        r = result["summary"].get(library)
        if r:
            lines.append(f"| {library} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | "
                         f"{100 * r['test_accuracy']:.2f}% |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="5 rounds, one epoch repeat")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    # 11 rounds: on the noisy 2-vCPU VM medians of 7 still moved ratios by 10-20% run to run
    rounds = ["--rounds", "5" if args.quick else "11"]
    threads = ["--threads", str(args.threads)]
    kernels = run("bench_kernels.py", os.path.join(args.out, "kernels.json"), threads + rounds)
    training = run("bench_training.py", os.path.join(args.out, "training.json"),
                   threads + rounds)
    memory = run("bench_epoch_memory.py", os.path.join(args.out, "epoch_memory.json"),
                 threads + ["--repeats", "1" if args.quick else "3"])
    machine = kernels["machine"]
    report = [
        f"Measured {machine['date']} on {machine['cpu']} ({machine['cores']} cores), "
        f"{args.threads} threads for every library; Python {machine['python']}, NumPy "
        f"{machine['numpy']}, fastcnn {machine['fastcnn']}, torch {machine['torch']}.",
        "", "Kernels (float32):", "", *kernel_table(kernels),
        "", "LeNet-5 training step and inference:", "", *training_table(training),
        "", "One full-MNIST LeNet-5 epoch (train_mnist.py's recipe), each library in its own "
        "process:", "",
        *memory_table(memory), "",
    ]
    path = os.path.join(args.out, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(report))
    print("\n".join(report))
    print(f"report written to {path}")


if __name__ == "__main__":
    main()
