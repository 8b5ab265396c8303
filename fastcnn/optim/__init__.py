"""Optimizers and learning-rate schedulers, with PyTorch's names and semantics.

``Optimizer`` holds parameter groups, state, ``zero_grad``, the ``step`` loop and state
dicts; ``SGD``, ``Adam`` and ``AdamW`` add only their per-parameter maths. ``lr_scheduler``
holds ``StepLR`` and ``CosineAnnealingLR``, also importable from here for short code
(``fastcnn.optim.StepLR``).
"""

from fastcnn.optim import lr_scheduler
from fastcnn.optim.adam import Adam, AdamW
from fastcnn.optim.lr_scheduler import CosineAnnealingLR, LRScheduler, StepLR
from fastcnn.optim.optimizer import Optimizer
from fastcnn.optim.sgd import SGD

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "LRScheduler",
    "Optimizer",
    "StepLR",
    "lr_scheduler",
]
