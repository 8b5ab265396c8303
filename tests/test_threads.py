"""Thread count control, bit-identical results for any thread count, and fork safety."""

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastcnn
from fastcnn import functional as F
from fastcnn._openmp import OPENMP_ENABLED


def all_outputs(x, w, b):
    """Every kernel's result on one input, as a flat list of arrays."""
    out = F.conv2d(x, w, b, 1, 2)
    g = np.sin(out)  # non-integer gradients: summation order would show in the bits
    results = [out, *F.conv2d_backward(g, x, w, 1, 2)]
    results += list(F.conv2d_backward(g, x, w, 1, 2, input_grad=False)[1:])
    pooled, index = F.max_pool2d(out, 2, return_indices=True)
    results += [pooled, index, F.max_pool2d_backward(pooled, index, out.shape)]
    avg = F.avg_pool2d(out, 3, 2, 1)
    results += [avg, F.avg_pool2d_backward(avg, out.shape, 3, 2, 1)]
    col = F.im2col(x, 5, 1, 2)
    results += [col, F.col2im(col, x.shape, 5, 1, 2)]
    flat = pooled.reshape(len(x), -1)
    weight = np.cos(np.arange(7 * flat.shape[1], dtype=x.dtype)).reshape(7, -1)
    dense = F.linear(flat, weight, weight[:, 0])
    results += [dense, *F.linear_backward(np.sin(dense), flat, weight)]
    activated = F.relu(out - 0.5)
    results += [activated, F.relu_backward(g, activated), F.add_relu(out, g)]
    return results


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 3, 20, 18)).astype(np.float32)  # 37: a ragged last chunk
    w = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    return x, w, b


@pytest.mark.usefixtures("kernel_copy")  # on every ISA copy of the C kernels
def test_bit_identical_for_1_2_3_threads(batch):
    with fastcnn.threads(1):
        want = all_outputs(*batch)
    for n in (2, 3):
        with fastcnn.threads(n):
            for got, expected in zip(all_outputs(*batch), want, strict=True):
                assert_array_equal(got, expected)


def test_bit_identical_over_20_runs_at_2_threads(batch):
    with fastcnn.threads(2):
        want = all_outputs(*batch)
        for _ in range(20):
            for got, expected in zip(all_outputs(*batch), want, strict=True):
                assert_array_equal(got, expected)


@pytest.mark.usefixtures("kernel_copy")
def test_float64_bit_identical_across_threads(batch):
    x, w, b = (a.astype(np.float64) for a in batch)
    with fastcnn.threads(1):
        want = all_outputs(x, w, b)
    with fastcnn.threads(3):
        for got, expected in zip(all_outputs(x, w, b), want, strict=True):
            assert_array_equal(got, expected)


def batch_norm_outputs(x):
    """BatchNorm's training forward, backward and running statistics, then its eval pass."""
    layer = (fastcnn.nn.BatchNorm2d if x.ndim == 4 else fastcnn.nn.BatchNorm1d)(
        x.shape[1], dtype=x.dtype
    )
    grad = np.sin(x)  # non-integer gradients: summation order would show in the bits
    results = [layer(x), layer.backward(grad), layer.running_mean, layer.running_var]
    layer.eval()
    results += [layer(x), layer.backward(grad), layer.weight.grad, layer.bias.grad]
    # with the ReLU after it fused in (nn/_fusion.py), in training mode
    fused = fastcnn.nn.Sequential(layer.train(), fastcnn.nn.ReLU())
    results += [fused(x), fused.backward(grad, input_grad=True), layer.weight.grad]
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_bit_identical_for_1_2_3_threads(batch, dtype):
    images = batch[0].astype(dtype)  # 3 channels over 2 or 3 threads
    for x in (images, images.reshape(37, 3, -1), images[:, :, 0, 0]):  # 2-D, 1-D (N, C, L), (N, C)
        with fastcnn.threads(1):
            want = batch_norm_outputs(x)
        for n in (2, 3):
            with fastcnn.threads(n):
                for got, expected in zip(batch_norm_outputs(x), want, strict=True):
                    assert_array_equal(got, expected)


def test_set_get_and_context_manager():
    before = fastcnn.get_num_threads()
    with fastcnn.threads(3):
        assert fastcnn.get_num_threads() == 3
        with fastcnn.threads(1):
            assert fastcnn.get_num_threads() == 1
        assert fastcnn.get_num_threads() == 3
    assert fastcnn.get_num_threads() == before
    fastcnn.set_num_threads(3)
    try:
        assert fastcnn.get_num_threads() == 3
        with fastcnn.threads(1):  # a block overrides the process-wide count
            assert fastcnn.get_num_threads() == 1
        assert fastcnn.get_num_threads() == 3
    finally:
        fastcnn.set_num_threads(None)  # back to the default
    assert fastcnn.get_num_threads() == before


def test_threads_blocks_belong_to_their_python_thread():
    seen = {}
    entered, release = threading.Event(), threading.Event()

    def inside_block():
        with fastcnn.threads(5):
            entered.set()
            release.wait(10)
            seen["inside"] = fastcnn.get_num_threads()

    worker = threading.Thread(target=inside_block)
    worker.start()
    entered.wait(10)
    seen["outside"] = fastcnn.get_num_threads()  # this thread is not in the block
    release.set()
    worker.join()
    assert seen == {"inside": 5, "outside": fastcnn._threads.default_num_threads()}


@pytest.mark.parametrize(
    "bad, error",
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)],
)
def test_bad_thread_counts(bad, error):
    with pytest.raises(error, match="number of threads"):
        fastcnn.set_num_threads(bad)
    with pytest.raises(error, match="number of threads"):
        with fastcnn.threads(bad):
            pass


def test_none_is_only_for_set_num_threads():
    with pytest.raises(TypeError, match="number of threads must be an int, got NoneType"):
        with fastcnn.threads(None):
            pass


def run_python(code, env=None, timeout=60):
    """Run code in a fresh interpreter that imports the same fastcnn as this one."""
    full_env = dict(os.environ, **(env or {}))
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=package_parent,
        check=False,
    )


@pytest.mark.skipif(not OPENMP_ENABLED, reason="serial build: always one thread")
def test_default_honours_omp_num_threads():
    result = run_python(
        "import fastcnn; print(fastcnn.get_num_threads())", env={"OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


@pytest.mark.skipif(not OPENMP_ENABLED, reason="serial build: always one thread")
def test_default_honours_threadpoolctl_limits():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        assert fastcnn.get_num_threads() == 1


def test_nothing_changes_the_global_openmp_setting(batch):
    from fastcnn._openmp import openmp_max_threads

    before = openmp_max_threads()
    with fastcnn.threads(1):
        all_outputs(*batch)
    assert openmp_max_threads() == before


def test_fork_after_parallel_region_does_not_hang():
    code = """
        import os, numpy as np, fastcnn
        from fastcnn import functional as F
        x = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
        w = np.ones((4, 3, 3, 3), np.float32)
        with fastcnn.threads(2):
            parent = F.conv2d(x, w)  # starts the OpenMP thread pool
        pid = os.fork()
        if pid == 0:
            with fastcnn.threads(2):  # even when asked: more would hang GNU OpenMP
                ok = np.array_equal(F.conv2d(x, w), parent) and fastcnn.get_num_threads() == 1
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
    """
    result = run_python(code, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "child exit 0" in result.stdout


def test_two_python_threads_share_a_model_safely(batch):
    """Kernels release the GIL; concurrent calls must not share scratch buffers."""
    x, w, b = batch
    want = F.conv2d(x, w, b, 1, 2)
    want_grads = F.conv2d_backward(want, x, w, 1, 2)
    failures = []

    def work():
        for _ in range(10):
            if not np.array_equal(F.conv2d(x, w, b, 1, 2), want):
                failures.append("forward")
            got = F.conv2d_backward(want, x, w, 1, 2)
            if not all(np.array_equal(g, e) for g, e in zip(got, want_grads, strict=True)):
                failures.append("backward")

    workers = [threading.Thread(target=work) for _ in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert failures == []


def test_kernel_blas_held_at_one_thread_from_any_python_thread():
    """single_threaded_blas must work from a second Python thread too. threadpoolctl (3.8)
    lets only the first Python thread to set an OpenBLAS limit change it and silently
    ignores the others: kernels run from another thread then called a 2-thread BLAS, whose
    sgemm rounds differently (1 ulp apart on AVX2 CPUs) from the main thread's."""
    from fastcnn._blas import _thread_setter, kernel_blas_controllers, single_threaded_blas

    controllers = kernel_blas_controllers()
    before = [c.get_num_threads() for c in controllers]
    try:
        for c in controllers:
            _thread_setter(c)(2)
        if any(c.get_num_threads() != 2 for c in controllers):
            pytest.skip("the BLAS cannot run 2 threads here")
        with single_threaded_blas():  # the main thread sets a limit first, as a model would
            pass
        seen = []

        def work():
            with single_threaded_blas():
                seen.extend(c.get_num_threads() for c in controllers)

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        assert seen == [1] * len(controllers)
        assert [c.get_num_threads() for c in controllers] == [2] * len(controllers)
    finally:
        for c, count in zip(controllers, before, strict=True):
            _thread_setter(c)(count)


@pytest.mark.skipif(not OPENMP_ENABLED, reason="serial build: no OpenMP runtime")
@pytest.mark.parametrize(
    "user_setting, expected",
    [
        ({}, "GOMP_SPINCOUNT = '30000'"),  # fastcnn's default: a short spin, then sleep
        ({"OMP_WAIT_POLICY": "active"}, "OMP_WAIT_POLICY = 'ACTIVE'"),  # the user's choice wins
    ],
)
def test_openmp_wait_policy(user_setting, expected):
    code = """
        import os, fastcnn
        print("left in environment:", "GOMP_SPINCOUNT" in os.environ)
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user_setting, OMP_DISPLAY_ENV="verbose")
    package_parent = os.path.dirname(os.path.dirname(fastcnn.__file__))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=package_parent,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stderr  # what libgomp read when it loaded
    assert "left in environment: False" in result.stdout
