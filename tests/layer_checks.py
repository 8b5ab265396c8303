"""Checks shared by the layer test files."""

import numpy as np


def assert_sequential_matches_its_layers(seq, layers, x, grad):
    """``seq`` (a Sequential) gives what its twin ``layers`` (the same modules, same
    weights) give called one by one: the output, the input gradient for ``grad`` and
    every parameter's gradient. ``grad=None``: ones."""
    out = seq(x)
    expected = x
    for layer in layers:
        expected = layer(expected)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    grad = np.ones_like(out) if grad is None else grad
    grad_x = seq.backward(grad, input_grad=True)
    for layer in reversed(list(layers)):
        grad = layer.backward(grad)
    np.testing.assert_allclose(grad_x, grad, rtol=1e-5, atol=1e-6)
    for (name, ours), (_, theirs) in zip(
        seq.named_parameters(), layers.named_parameters(), strict=True
    ):
        np.testing.assert_allclose(ours.grad, theirs.grad, rtol=1e-5, atol=1e-5, err_msg=name)
