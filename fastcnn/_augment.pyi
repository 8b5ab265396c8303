# Stub of the compiled module csrc/_augment.pyx (RandomAffine's nearest-pixel kernel on a
# float32 batch, per-image float64 coefficients); tests/test_stubs.py checks that its
# functions and parameter names match the module's.
import numpy as np
from numpy.typing import NDArray

_D = NDArray[np.float64]

def affine_nearest(
    x: NDArray[np.float32],
    cos_over_scale: _D,
    sin_over_scale: _D,
    translate_x: _D,
    translate_y: _D,
    fill: float,
    out: NDArray[np.float32],
    n_threads: int,
) -> None: ...
