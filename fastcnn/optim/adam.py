"""Adam and AdamW, as ``torch.optim.Adam`` and ``torch.optim.AdamW``."""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn.optim.optimizer import Optimizer, ParamsT, check_non_negative, lerp_


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2014), optionally AMSGrad; ``torch.optim.Adam``.

    For each parameter :math:`\theta` with gradient :math:`g`, at step :math:`t`:

    .. math::

        g &\leftarrow g + \lambda \theta \quad (\text{or } \theta \leftarrow
            \theta (1 - \gamma \lambda) \text{ with decoupled weight decay}) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1) g, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g^2 \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \text{ with amsgrad, else } v_t \\
        \theta &\leftarrow \theta - \frac{\gamma}{1 - \beta_1^t} \,
            \frac{m_t}{\sqrt{\hat v_t} / \sqrt{1 - \beta_2^t} + \epsilon}

    Parameters
    ----------
    params : iterable of Parameter or of dict
        Parameters, or parameter groups (dicts with ``"params"`` and overrides).
    lr : float, default 1e-3
        Learning rate :math:`\gamma`.
    betas : tuple of float, default (0.9, 0.999)
        Decay rates :math:`(\beta_1, \beta_2)` of the moment estimates, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator for numerical stability.
    weight_decay : float, default 0
        Weight decay :math:`\lambda`: an L2 penalty added to the gradient, or with
        ``decoupled_weight_decay`` a shrinking of the weights (AdamW).
    amsgrad : bool, default False
        Use the running maximum of :math:`v_t` (AMSGrad).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    decoupled_weight_decay : bool, default False
        Decay the weights directly instead of through the gradient; ``AdamW`` sets it.

    Notes
    -----
    The update follows ``torch.optim.adam._single_tensor_adam`` operation by operation,
    in the parameter's dtype, with the bias corrections computed in Python floats as
    PyTorch does, so float32 runs agree with PyTorch to rounding.

    State per parameter: ``"step"`` (int), ``"exp_avg"``, ``"exp_avg_sq"`` and, with
    amsgrad, ``"max_exp_avg_sq"``. PyTorch keeps ``step`` as a 0-d float tensor; an int
    holds the same count exactly, and ``load_state_dict`` accepts either.
    """

    _flags = ("amsgrad", "maximize", "decoupled_weight_decay")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas) if isinstance(betas, list) else betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        owner = type(self).__name__
        check_non_negative(group["eps"], "eps", owner, "Invalid epsilon value")
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
        for index, beta in enumerate(betas):
            message = f"Invalid beta parameter at index {index}"
            check_non_negative(beta, f"betas[{index}]", owner, message)
            if not beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")

    def _state_keys(self, group):
        keys = {"step", "exp_avg", "exp_avg_sq"}
        return keys | {"max_exp_avg_sq"} if group["amsgrad"] else keys

    def _update(self, param, grad, state, group):
        if not state:
            state.update(_zero_state(param, group["amsgrad"]))
        beta1, beta2 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        state["step"] += 1
        step = state["step"]

        if group["maximize"]:
            grad = -grad
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param.data *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * param.data

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad

        # Python floats, as PyTorch computes them from step.item().
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        step_size = lr / bias_correction1

        if group["amsgrad"]:
            np.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second_moment = state["max_exp_avg_sq"]
        else:
            second_moment = exp_avg_sq
        denom = np.sqrt(second_moment)
        denom /= bias_correction2_sqrt
        denom += group["eps"]
        param.data += -step_size * exp_avg / denom


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019); ``torch.optim.AdamW``.

    The weights shrink by :math:`\theta \leftarrow \theta (1 - \gamma \lambda)` before the
    Adam step, instead of :math:`\lambda \theta` being added to the gradient; see ``Adam``
    for the other parameters. The default ``weight_decay`` is 1e-2, as in PyTorch.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As ``Optimizer.load_state_dict``; the groups stay decoupled, as in PyTorch."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def _zero_state(param, amsgrad):
    state = {
        "step": 0,
        "exp_avg": np.zeros_like(param.data),
        "exp_avg_sq": np.zeros_like(param.data),
    }
    if amsgrad:
        state["max_exp_avg_sq"] = np.zeros_like(param.data)
    return state
