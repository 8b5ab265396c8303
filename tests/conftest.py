"""Fixtures shared by the test files."""

import pytest

from fastcnn import _isa

# The ISA copies of the C kernels to test: every copy this CPU runs, up to the one selected
# at import (FASTCNN_MAX_CPU_ISA caps it: CI's portable-kernel step runs the portable copy
# alone, tools/asan_kernels.sh baseline and portable), best first.
KERNEL_COPIES = [
    name for name in _isa.available() if _isa.LEVELS[name] <= _isa.LEVELS[_isa.active()]
]


@pytest.fixture(params=KERNEL_COPIES)
def kernel_copy(request):
    """Run the test on one ISA copy of the C kernels (fastcnn._isa.use), then go back to the
    copy that ran before; the copy's name is the fixture's value (and in the test's id)."""
    previous = _isa.active()
    assert _isa.use(request.param) == request.param
    try:
        yield request.param
    finally:
        _isa.use(previous)


@pytest.fixture
def conv_input_grads(monkeypatch):
    """The ``input_grad`` of every convolution backward the test runs, in order (a spy on
    ConvPlan.backward, which every Conv2d's backward calls)."""
    from fastcnn._conv_plan import ConvPlan

    calls = []
    real = ConvPlan.backward

    def spy(plan, grad_out, x, packs, input_grad, bias_grad, columns):
        calls.append(input_grad)
        return real(plan, grad_out, x, packs, input_grad, bias_grad, columns)

    monkeypatch.setattr(ConvPlan, "backward", spy)
    return calls
