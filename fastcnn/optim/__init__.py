"""Optimizers and learning-rate schedulers, with PyTorch's names and semantics.

``Optimizer`` holds parameter groups, state, ``zero_grad``, the ``step`` loop and state
dicts; ``SGD``, ``Adam``, ``AdamW`` and ``RMSprop`` add only their per-parameter maths.
``lr_scheduler`` holds the schedulers (StepLR, MultiStepLR, LinearLR, CosineAnnealingLR,
OneCycleLR, SequentialLR, ReduceLROnPlateau), also importable from here for short code
(``fastcnn.optim.StepLR``).
"""

from fastcnn.optim import lr_scheduler
from fastcnn.optim.adam import Adam, AdamW
from fastcnn.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from fastcnn.optim.optimizer import Optimizer
from fastcnn.optim.rmsprop import RMSprop
from fastcnn.optim.sgd import SGD

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "CosineAnnealingLR",
    "LRScheduler",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "Optimizer",
    "RMSprop",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "lr_scheduler",
]
