"""SGD: stochastic gradient descent with optional momentum, as ``torch.optim.SGD``."""

from __future__ import annotations

from fastcnn._validation import number
from fastcnn.optim.optimizer import Optimizer, ParamsT, check_non_negative


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum; ``torch.optim.SGD``.

    For each parameter :math:`\theta` with gradient :math:`g`, at step :math:`t`:

    .. math::

        g &\leftarrow -g \text{ if maximize}; \quad g \leftarrow g + \lambda \theta \\
        b_t &= g \text{ if } t = 1 \text{ else } \mu b_{t-1} + (1 - \tau) g \\
        g &\leftarrow g + \mu b_t \text{ if nesterov else } b_t \\
        \theta &\leftarrow \theta - \gamma g

    with learning rate :math:`\gamma`, momentum :math:`\mu`, dampening :math:`\tau` and
    weight decay :math:`\lambda` (the momentum lines only when :math:`\mu \ne 0`).

    Parameters
    ----------
    params : iterable of Parameter or of dict
        Parameters, or parameter groups (dicts with ``"params"`` and overrides).
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    momentum : float, default 0
        Momentum factor :math:`\mu`.
    dampening : float, default 0
        Dampening :math:`\tau` of the gradient added to the momentum buffer.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda` added to the gradient.
    nesterov : bool, default False
        Nesterov momentum (needs momentum > 0 and dampening 0).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    The "SGDMomentum" of the NumPy seed code, ``v = m * v + (1 - m) * g;
    w -= lr * v``, is ``SGD(params, lr, momentum=m, dampening=m)`` except on the very first
    step, where PyTorch (and this class) sets the buffer to the gradient itself rather than
    to ``(1 - m) * g``. The usual PyTorch form has no dampening, ``v = m * v + g``: a
    constant gradient ``g`` then moves the weights by ``lr * g / (1 - m)`` per step in the
    long run, instead of ``lr * g``.

    State per parameter: ``"momentum_buffer"`` (only when momentum is nonzero).

    Examples
    --------
    >>> opt = fastcnn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # doctest: +SKIP
    """

    _flags = ("nesterov", "maximize")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        owner = type(self).__name__
        check_non_negative(group["momentum"], "momentum", owner, "Invalid momentum value")
        number(group["dampening"], "dampening", owner)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _state_keys(self, group):
        return {"momentum_buffer"} if group["momentum"] != 0 else set()

    def _update(self, param, grad, state, group):
        # Same operations, in the same order, as torch.optim.sgd._single_tensor_sgd; never
        # write into ``grad``, which is the caller's ``param.grad``.
        momentum = group["momentum"]
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.data
        if momentum != 0:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = grad.copy()
            else:
                buffer *= momentum
                buffer += (1 - group["dampening"]) * grad
            grad = grad + momentum * buffer if group["nesterov"] else buffer
        param.data -= group["lr"] * grad
