"""Training: ``fit``, ``evaluate``, ``predict``, ``History`` and checkpoints.

history = fastcnn.train.fit(model, loss_fn, optimizer, train_loader, val_loader,
                            epochs=5, checkpoint="run/checkpoint.npz")
history.plot("run/history.png")

``callbacks=[EarlyStopping(patience=3), ModelCheckpoint("run/best.npz")]`` stops a run whose
validation loss stalls and keeps the best epoch's checkpoint.
"""

from fastcnn.train.callbacks import Callback, EarlyStopping, ModelCheckpoint, Run
from fastcnn.train.checkpoint import IncompatibleCheckpointError, load_checkpoint, restore_model
from fastcnn.train.history import History
from fastcnn.train.loop import NonFiniteLossError, eval_mode, evaluate, fit, predict
from fastcnn.train.metrics import topk_correct

__all__ = [
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "Run",
    "History",
    "IncompatibleCheckpointError",
    "NonFiniteLossError",
    "eval_mode",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict",
    "restore_model",
    "topk_correct",
]
