"""Long runs and buffer lifetimes: no memory growth over 1,000 training steps, per-thread
kernel workspaces freed when their thread ends, and a clean exit while a thread is still
running kernels."""

import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import weakref

import numpy as np
import pytest

import fastcnn
from fastcnn import _ops
from fastcnn import functional as F

# After warm-up (workspaces grown, optimizer state allocated, allocator pools filled),
# 1,000 more steps may move the resident size by allocator noise only.
RSS_TOLERANCE_MB = 4.0

TRAINING_RUN = """
    import json, sys
    import numpy as np
    import fastcnn
    from fastcnn import data, models, nn, optim

    def rss_mb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    steps, warmup, every, threads = (int(arg) for arg in sys.argv[1:])
    if threads:
        fastcnn.set_num_threads(threads)
    loader = data.DataLoader(data.embedded_mnist(train=True), batch_size=8, shuffle=True,
                             seed=0, drop_last=True)
    model = models.LeNet5(rng=0)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    samples, step = {}, 0
    while step < steps:
        for x, y in loader:
            loss_fn(model(x), y)
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
            step += 1
            if step >= warmup and step % every == 0:
                samples[step] = rss_mb()
            if step == steps:
                break
    print(json.dumps({"rss_mb": samples, "loss": float(loss_fn(model(x), y))}))
"""


def run_python(code, *args, timeout=300):
    """Run code in a fresh interpreter that imports the same fastcnn as this one, with
    NumPy's default allocator: fastcnn's array cache keeps up to 256 MiB of freed arrays,
    which a leak would reuse before the resident set grew."""
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=package_parent,
        env=dict(os.environ, FASTCNN_ARRAY_CACHE="0"),
        check=False,
    )


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_1000_training_steps_do_not_grow_the_resident_set():
    """LeNet-5 + Adam + DataLoader over the embedded MNIST subset, batch 8: the resident set
    after step 1,100 is within RSS_TOLERANCE_MB of the one after 100 warm-up steps."""
    result = run_python(TRAINING_RUN, 1100, 100, 100, 0)  # 0: the default thread count
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    rss = {int(step): mb for step, mb in report["rss_mb"].items()}
    growth = rss[1100] - rss[100]
    print(
        f"RSS after warm-up {rss[100]:.1f} MB, after 1,000 more steps {rss[1100]:.1f} MB "
        f"(growth {growth:+.2f} MB); samples {rss}"
    )
    assert np.isfinite(report["loss"])
    assert growth < RSS_TOLERANCE_MB, rss


def test_resident_set_check_detects_a_real_leak():
    """The measurement can see a leak of the size it guards against (so a pass means
    something): keeping a 256 KB array per step grows the resident set by 10 MB in 40 steps,
    and the check must see it."""
    code = TRAINING_RUN.replace(
        "optimizer.step()", "optimizer.step(); leaked.append(np.ones(32768))"
    ).replace("samples, step = {}, 0", "samples, step, leaked = {}, 0, []")
    result = run_python(code, 60, 20, 20, 1)
    assert result.returncode == 0, result.stderr
    rss = {int(step): mb for step, mb in json.loads(result.stdout)["rss_mb"].items()}
    assert rss[60] - rss[20] > 2 * RSS_TOLERANCE_MB


def run_in_thread(function):
    """Run ``function`` in a new thread, wait for it, and return its result."""
    result = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join()
    return result[0]


def test_a_threads_kernel_workspace_is_freed_when_the_thread_ends():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    w = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)

    def use_kernels():
        out = F.conv2d(x, w, None, 1, 2)
        F.conv2d_backward(out, x, w, 1, 2)
        workspace = _ops._buffers.f  # this thread's float32 scratch buffer
        assert workspace.nbytes >= x[0].size * w.shape[2] * w.shape[3] * 4
        return weakref.ref(workspace)

    handles = [run_in_thread(use_kernels) for _ in range(3)]
    gc.collect()
    assert all(handle() is None for handle in handles), "a workspace outlived its thread"


def test_exit_while_a_daemon_thread_runs_kernels_is_clean():
    """Interpreter shutdown while a daemon thread is inside parallel kernels (GIL released):
    exit status 0, no crash or hang in OpenMP or in the freed workspace."""
    code = """
        import threading, time
        import numpy as np
        import fastcnn
        from fastcnn import functional as F

        x = np.ones((32, 3, 32, 32), np.float32)
        w = np.ones((16, 3, 5, 5), np.float32)
        started = threading.Event()

        def spin():
            with fastcnn.threads(2):
                while True:
                    F.conv2d_backward(F.conv2d(x, w, None, 1, 2), x, w, 1, 2)
                    started.set()

        threading.Thread(target=spin, daemon=True).start()
        started.wait(30)
        time.sleep(0.2)
        print("exiting")
    """
    for _ in range(3):
        result = run_python(code, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "exiting"
