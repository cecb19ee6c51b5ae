"""The Keras 2 requirement, checked instead of imposed.

tensorflow-model-optimization (QAT, and the tf_keras models our trainer builds) works only
with Keras 2 (the `tf_keras` package). TensorFlow 2.16 resolves `tf.keras` to Keras 3 unless
`TF_USE_LEGACY_KERAS=1` is in the environment when `tf.keras` is first resolved, which
happens as soon as TensorFlow or TFX is imported. A library cannot set it for its user
without changing the whole process behind their back (and it is too late once TFX has been
imported), so every component constructor and every executor calls `require_keras2()`
and stops with one line naming the fix.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

ENV_VAR = "TF_USE_LEGACY_KERAS"
_ON = ("1", "true", "True")

FIX = (f"set {ENV_VAR}=1 in the environment before TensorFlow or TFX is imported "
       f"(export {ENV_VAR}=1, or os.environ['{ENV_VAR}'] = '1' on the first line of the pipeline file, "
       "before `from tfx import v1`)")


class KerasVersionError(RuntimeError):
    """Keras 3 is active where tensorflow-model-optimization needs Keras 2."""


def keras_problem() -> Optional[str]:
    """Why Keras 2 is not in force, or None when it is. Loads nothing that is not loaded."""
    value = os.environ.get(ENV_VAR)
    if value not in _ON:
        now = "not set" if value is None else f"{value!r}, not '1'"
        return f"{ENV_VAR} is {now}, so TensorFlow uses Keras 3"
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        model_module = getattr(getattr(getattr(tf, "keras", None), "Model", None), "__module__", "") or ""
        if not model_module.startswith("tf_keras"):
            # Set now, but not when tf.keras was resolved (by the user, or by a library that sets
            # it on import, as tensorflow_transform does: too late for TensorFlow).
            return (f"{ENV_VAR} was not 1 when TensorFlow resolved tf.keras, which is Keras 3 "
                    f"(tf.keras.Model is from {model_module or 'an unknown module'})")
    return None


def require_keras2(where: str) -> None:
    """Raises KerasVersionError (one line: what, where, the fix) unless Keras 2 is in force.

    where: who needs it, e.g. "PostTrainingQuantizer" or "the QATTrainer executor"."""
    problem = keras_problem()
    if problem:
        raise KerasVersionError(f"{where} needs Keras 2 (tensorflow-model-optimization): {problem}; {FIX}")
