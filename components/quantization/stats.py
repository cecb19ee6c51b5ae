"""Numbers: one home for "is this a finite number" (more statistics to come)."""
from __future__ import annotations

import math

import numpy as np


def is_finite(x) -> bool:
    """True for a real, finite int or float (numpy scalars included); False for None,
    NaN, infinities, booleans and anything that is not a number."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(float(x))
