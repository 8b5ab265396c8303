"""fastcnn: fast CPU convolutional networks: Cython + OpenMP kernels under PyTorch-like layers."""

from fastcnn._openmp_env import short_spin_while_loading
from fastcnn._version import __version__

try:
    with short_spin_while_loading():
        from fastcnn import _openmp  # noqa: F401  (the smallest compiled module)
except ImportError as error:  # pragma: no cover - only in an unbuilt source checkout
    raise ImportError(
        "fastcnn's compiled kernels are not built. From the source checkout run\n"
        '    pip install -e ".[dev]"\n'
        "(or: python setup.py build_ext --inplace), then import fastcnn again.\n"
        f"Original error: {error}"
    ) from error

# fastcnn.onnx imports the onnx package only inside its export and load functions.
from fastcnn import data, functional, models, nn, onnx, optim, train
from fastcnn._config import show_config
from fastcnn._grad_mode import (
    enable_grad,
    inference_mode,
    is_grad_enabled,
    no_grad,
    set_grad_enabled,
)
from fastcnn._summary import LayerRow, ModelSummary, summary
from fastcnn._threads import get_num_threads, set_num_threads, threads

# fastcnn.gradcheck is the function (as torch.autograd.gradcheck), shadowing its module.
from fastcnn.gradcheck import GradcheckError, gradcheck
from fastcnn.io import CheckpointError, load, save

__all__ = [
    "CheckpointError",
    "GradcheckError",
    "LayerRow",
    "ModelSummary",
    "__version__",
    "data",
    "enable_grad",
    "functional",
    "get_num_threads",
    "gradcheck",
    "inference_mode",
    "is_grad_enabled",
    "load",
    "models",
    "nn",
    "no_grad",
    "onnx",
    "optim",
    "save",
    "set_grad_enabled",
    "set_num_threads",
    "show_config",
    "summary",
    "threads",
    "train",
]

from fastcnn import _memory  # noqa: E402  (after the compiled modules' import check)

_memory.install()  # keep freed NumPy arrays for reuse (FASTCNN_ARRAY_CACHE=0: not)
