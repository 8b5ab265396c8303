"""Models under threads and processes: concurrent use, thread-count changes, fork, spawn and
forkserver workers. (The kernel-level versions are in test_threads.py.)"""

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastcnn
from fastcnn import _ops, models, nn
from fastcnn import functional as F
from fastcnn._openmp import OPENMP_ENABLED


def lenet(seed=0):
    return models.LeNet5(rng=seed).eval()


def images(n, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 1, 28, 28)).astype(np.float32)


def run_concurrently(work, n_threads):
    """Start ``n_threads`` threads running ``work(index)`` together; re-raise their errors."""
    errors = []
    start = threading.Barrier(n_threads)

    def target(index):
        try:
            start.wait()
            work(index)
        except BaseException as error:  # noqa: BLE001 - reported in the main thread
            errors.append(error)

    workers = [threading.Thread(target=target, args=(i,)) for i in range(n_threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------- threads


def test_one_model_serves_two_threads_at_once():
    """Inference on one model from two Python threads (kernels release the GIL) gives each
    thread exactly the single-threaded answer."""
    model = lenet()
    batches = [images(16, seed) for seed in (1, 2)]
    want = [model(x) for x in batches]
    results = {}

    def work(index):
        for repeat in range(8):
            results[index, repeat] = model(batches[index])

    run_concurrently(work, 2)
    for (index, _), got in results.items():
        assert_array_equal(got, want[index])


def train_steps(model, x, y, steps):
    """``steps`` SGD steps on one batch; the final parameters."""
    loss_fn = nn.CrossEntropyLoss()
    optimizer = fastcnn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        loss_fn(model(x), y)
        optimizer.zero_grad()
        model.backward(loss_fn.backward())
        optimizer.step()
    return [p.data.copy() for p in model.parameters()]


def gradients(model, x, y):
    """Loss and every parameter gradient of one training step, plus the input gradient."""
    loss_fn = nn.CrossEntropyLoss()
    model.zero_grad()
    loss = loss_fn(model(x), y)
    grad_x = model.backward(loss_fn.backward(), input_grad=True)
    return [np.float64(loss), grad_x, *(p.grad.copy() for p in model.parameters())]


@pytest.mark.parametrize(
    "make",
    [lambda: models.LeNet5(rng=4), lambda: models.ImprovedLeNet5(rng=4)],
    ids=["LeNet5", "ImprovedLeNet5"],
)
def test_scratch_filled_with_nan_changes_no_bit_of_a_training_step(make, monkeypatch):
    """The kernels' scratch (_ops.workspace) is np.empty and reused between calls:
    a value read before it is written would be stale, and change results only sometimes.
    Filled with NaN before every kernel call, the scratch must leave every gradient's bits
    as they were, at 1, 2 and 3 threads, batches with and without a ragged last chunk."""
    model = make()
    rng = np.random.default_rng(5)
    batches = [
        (rng.standard_normal((n, 1, 28, 28)).astype(np.float32), np.arange(n) % 10)
        for n in (16, 13)
    ]
    with fastcnn.threads(1):
        want = [gradients(model, x, y) for x, y in batches]

    workspace = _ops.workspace

    def nan_filled(rows, columns, dtype):
        scratch = workspace(rows, columns, dtype)
        scratch.fill(np.nan)
        return scratch

    monkeypatch.setattr(_ops, "workspace", nan_filled)
    for n_threads in (1, 2, 3, 1, 2, 3):
        with fastcnn.threads(n_threads):
            for (x, y), expected in zip(batches, want, strict=True):
                for got, value in zip(gradients(model, x, y), expected, strict=True):
                    assert_array_equal(got, value)


def test_two_threads_training_their_own_models_match_sequential_training():
    """Each Python thread has its own kernel workspace: training two models at once gives the
    bits of training them one after the other."""
    x = images(12)
    y = np.arange(12) % 10
    want = train_steps(models.LeNet5(rng=3), x, y, 4)
    results = {}

    def work(index):
        results[index] = train_steps(models.LeNet5(rng=3), x, y, 4)

    run_concurrently(work, 2)
    for got in results.values():
        for g, w in zip(got, want, strict=True):
            assert_array_equal(g, w)


def test_set_num_threads_from_several_threads_at_once():
    """Threads changing the count while others run kernels: no crash, and every result is
    the bit-identical one (the kernels promise the same bits for any thread count)."""
    model = lenet()
    x = images(8)
    want = model(x)
    before = fastcnn.get_num_threads()
    counts = (1, 2, 3, 1)

    def work(index):
        for _ in range(6):
            fastcnn.set_num_threads(counts[index])
            assert fastcnn.get_num_threads() in counts
            assert_array_equal(model(x), want)

    try:
        run_concurrently(work, len(counts))
    finally:
        fastcnn.set_num_threads(None)
    assert fastcnn.get_num_threads() == before


def test_overlapping_threads_blocks_in_two_threads_restore_the_count():
    before = fastcnn.get_num_threads()
    first_entered, second_entered, first_left = (threading.Event() for _ in range(3))

    # 5 and 7: neither can be the default count, so a wrong restore cannot pass by chance
    def first():
        with fastcnn.threads(5):
            first_entered.set()
            second_entered.wait(10)
        first_left.set()

    def second():
        first_entered.wait(10)
        with fastcnn.threads(7):
            second_entered.set()
            first_left.wait(10)

    workers = [threading.Thread(target=f) for f in (first, second)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert fastcnn.get_num_threads() == before


# -------------------------------------------------------------------------- processes


def forward_in_worker(state, x):
    """Rebuild LeNet-5 from a state dict in a worker process and run it (module level, so
    spawn and forkserver workers can import it)."""
    model = models.LeNet5().eval()
    model.load_state_dict(state)
    return model(x), fastcnn.get_num_threads()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_workers_started_by_spawn_and_forkserver_match_the_parent(method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method on this platform")
    model = lenet()
    batches = [images(4, seed) for seed in (5, 6)]
    state = {k: v.copy() for k, v in model.state_dict().items()}
    with fastcnn.threads(2):  # the parent has run parallel regions before starting workers
        want = [model(x) for x in batches]
    context = multiprocessing.get_context(method)
    with context.Pool(2) as pool:
        results = pool.starmap(forward_in_worker, [(state, x) for x in batches])
    for (got, _), expected in zip(results, want, strict=True):
        assert_array_equal(got, expected)


def run_python(code, timeout=120):
    """Run code in a fresh interpreter that imports the same fastcnn as this one."""
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=package_parent,
        check=False,
    )


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.skipif(not OPENMP_ENABLED, reason="serial build: no thread pool to break")
def test_fork_after_parallel_training_step_trains_in_the_child():
    """A model trained on 2 threads, then os.fork and a 'fork' multiprocessing pool: children
    run forward and backward (GNU OpenMP would hang without the at-fork hook) and agree."""
    code = """
        import multiprocessing, os
        import numpy as np
        import fastcnn
        from fastcnn import models, nn

        x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
        y = np.arange(8)
        model = models.LeNet5(rng=0)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            loss = loss_fn(model(x), y)
            model.zero_grad()
            model.backward(loss_fn.backward())
            return loss, model.conv1.weight.grad.copy()

        with fastcnn.threads(2):
            want_loss, want_grad = step()

        def check(_=None):
            loss, grad = step()
            return loss == want_loss and np.array_equal(grad, want_grad)

        pid = os.fork()
        if pid == 0:
            os._exit(0 if check() and fastcnn.get_num_threads() == 1 else 3)
        _, status = os.waitpid(pid, 0)
        print("fork child exit", os.waitstatus_to_exitcode(status))
        with multiprocessing.get_context("fork").Pool(2) as pool:
            print("fork pool", all(pool.map(check, range(2))))
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert "fork child exit 0" in result.stdout
    assert "fork pool True" in result.stdout


def test_kernels_agree_after_many_thread_count_changes():
    """Alternating thread counts between calls never leaves a stale per-thread workspace of
    the wrong size (the workspace is sized by the count of each call)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((9, 3, 12, 12)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    with fastcnn.threads(1):
        want = F.conv2d(x, w, None, 1, 1)
        want_grads = F.conv2d_backward(want, x, w, 1, 1)
    for n in (3, 1, 2, 3, 1):
        with fastcnn.threads(n):
            assert_array_equal(F.conv2d(x, w, None, 1, 1), want)
            for got, expected in zip(F.conv2d_backward(want, x, w, 1, 1), want_grads, strict=True):
                assert_array_equal(got, expected)
