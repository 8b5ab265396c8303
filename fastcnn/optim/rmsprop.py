"""RMSprop, as ``torch.optim.RMSprop``."""

from __future__ import annotations

import numpy as np

from fastcnn.optim.optimizer import Optimizer, ParamsT, check_non_negative, lerp_


class RMSprop(Optimizer):
    r"""RMSprop (Hinton's lecture 6e), optionally centered and with momentum;
    ``torch.optim.RMSprop``.

    For each parameter :math:`\theta` with gradient :math:`g`:

    .. math::

        g &\leftarrow g + \lambda \theta \\
        v &\leftarrow \alpha v + (1 - \alpha) g^2 \\
        \bar g &\leftarrow \alpha \bar g + (1 - \alpha) g, \quad
            d = \sqrt{v - \bar g^2} + \epsilon \text{ if centered, else }
            d = \sqrt{v} + \epsilon \\
        b &\leftarrow \mu b + g / d, \quad \theta \leftarrow \theta - \gamma b
            \quad (\theta \leftarrow \theta - \gamma g / d \text{ if } \mu = 0)

    Parameters
    ----------
    params : iterable of Parameter or of dict
        Parameters, or parameter groups (dicts with ``"params"`` and overrides).
    lr : float, default 1e-2
        Learning rate :math:`\gamma`.
    alpha : float, default 0.99
        Smoothing constant :math:`\alpha` of the running averages.
    eps : float, default 1e-8
        Added to the denominator for numerical stability.
    weight_decay : float, default 0
        L2 penalty :math:`\lambda` added to the gradient.
    momentum : float, default 0
        Momentum factor :math:`\mu`.
    centered : bool, default False
        Normalise by an estimate of the gradient's variance instead of its second moment.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Notes
    -----
    The update follows ``torch.optim.rmsprop._single_tensor_rmsprop`` operation by
    operation, in the parameter's dtype (float32 or float64).

    State per parameter: ``"step"`` (int), ``"square_avg"``, and ``"momentum_buffer"``
    (momentum > 0) and ``"grad_avg"`` (centered). ``OneCycleLR`` cycles ``momentum``.
    """

    _flags = ("centered", "maximize")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        owner = type(self).__name__
        check_non_negative(group["eps"], "eps", owner, "Invalid epsilon value")
        check_non_negative(group["momentum"], "momentum", owner, "Invalid momentum value")
        check_non_negative(group["alpha"], "alpha", owner, "Invalid alpha value")

    def _state_keys(self, group):
        keys = {"step", "square_avg"}
        if group["momentum"] > 0:
            keys.add("momentum_buffer")
        if group["centered"]:
            keys.add("grad_avg")
        return keys

    def _update(self, param, grad, state, group):
        # torch.optim.rmsprop._single_tensor_rmsprop, in the same order; never write into
        # ``grad``, which is the caller's ``param.grad``.
        alpha, momentum = group["alpha"], group["momentum"]
        if not state:
            state["step"] = 0
            state["square_avg"] = np.zeros_like(param.data)
        state["step"] += 1
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.data

        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state.setdefault("grad_avg", np.zeros_like(param.data))
            lerp_(grad_avg, grad, 1 - alpha)
            avg = np.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = np.sqrt(square_avg)
        avg += group["eps"]

        if momentum > 0:
            # Created on first use, also when OneCycleLR turns momentum on mid-run.
            buffer = state.setdefault("momentum_buffer", np.zeros_like(param.data))
            buffer *= momentum
            buffer += grad / avg
            param.data += -group["lr"] * buffer
        else:
            param.data += -group["lr"] * (grad / avg)
