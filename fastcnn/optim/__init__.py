"""Optimizers and learning-rate schedulers, with PyTorch's names and semantics.

``Optimizer`` holds parameter groups, state, ``zero_grad``, the ``step`` loop and state
dicts; ``SGD``, ``Adam`` and ``AdamW`` add only their per-parameter maths. ``lr_scheduler``
holds ``StepLR`` and ``CosineAnnealingLR``.
"""

from fastcnn.optim import lr_scheduler
from fastcnn.optim.adam import Adam, AdamW
from fastcnn.optim.optimizer import Optimizer
from fastcnn.optim.sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "lr_scheduler"]
