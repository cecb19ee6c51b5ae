"""TFLite Micro on the host (PyPI `tflite-micro`): does a model load and run on the
microcontroller runtime, how much tensor arena does it need, and do its outputs agree
with the LiteRT interpreter's.

The arena figure is the smallest arena in which TFLM allocates the model's tensors and
runs it (a bisection to 16 bytes, TFLM's alignment), measured with TFLM's default
recording allocator; on a device add the few hundred bytes its own interpreter bookkeeping
takes. What the runtime prints when it refuses a model ("Hybrid models are not supported on
TFLite Micro.") is captured and recorded as the reason.
"""
from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

import numpy as np

from components.quantization.interpreter import TFLiteRunner, captured_native_output, dequantize

MAX_ARENA_BYTES = 256 << 20  # above this, the model is not a microcontroller model
ARENA_ALIGNMENT = 16


def _runtime():
    from tflite_micro.python.tflite_micro import runtime

    return runtime


def _reason(native: str, error: Exception) -> str:
    """The runtime's own explanation: its printed lines, without the file:line prefixes."""
    lines = [re.sub(r"^\S+\.cc(:\d+)?\s*", "", line).strip() for line in native.splitlines() if line.strip()]
    return "; ".join(lines[:3]) or f"{type(error).__name__}: {error}"


def load(content: bytes, arena_bytes: int):
    """(interpreter, None) when TFLM allocates the model in `arena_bytes`, else (None, reason)."""
    runtime = _runtime()
    with captured_native_output() as captured:
        try:
            interpreter = runtime.Interpreter.from_bytes(bytes(content), arena_size=int(arena_bytes))
        except Exception as e:  # noqa: BLE001 - the runtime raises RuntimeError with no detail
            error = e
            interpreter = None
    if interpreter is None:
        return None, _reason(captured[0], error)
    return interpreter, None


def smallest_arena(content: bytes, ceiling: int = MAX_ARENA_BYTES) -> Tuple[Optional[int], Optional[str]]:
    """(the smallest arena in bytes that allocates the model, None) or (None, the reason
    it does not allocate even in `ceiling` bytes)."""
    interpreter, reason = load(content, ceiling)
    if interpreter is None:
        return None, reason
    low, high = 0, ceiling  # low fails (or is 0), high allocates
    while high - low > ARENA_ALIGNMENT:
        mid = (low + high) // 2 // ARENA_ALIGNMENT * ARENA_ALIGNMENT
        if mid <= low:
            break
        ok, _ = load(content, mid)
        low, high = (low, mid) if ok is not None else (mid, high)
    return high, None


class MicroRunner:
    """One TFLM interpreter; `predict` takes float inputs [B, ...] and returns float outputs,
    quantizing and dequantizing exactly as TFLiteRunner does (round, then clip)."""

    def __init__(self, content: bytes, arena_bytes: int):
        self.interpreter, reason = load(content, arena_bytes)
        if self.interpreter is None:
            raise RuntimeError(reason)
        self._litert = TFLiteRunner(content, use_xnnpack=False)  # for the I/O quantization only
        self.output = self.interpreter.get_output_details(0)

    def predict(self, x: np.ndarray) -> np.ndarray:
        rows = []
        for example in np.asarray(x):
            self.interpreter.set_input(self._litert.prepare_input(example[None]), 0)
            self.interpreter.invoke()
            y = self.interpreter.get_output(0)
            if np.issubdtype(y.dtype, np.integer):
                scale, zero_point = self.output["quantization_parameters"]["scales"][0], \
                    self.output["quantization_parameters"]["zero_points"][0]
                y = dequantize(y, scale, zero_point)
            rows.append(np.asarray(y, np.float32).reshape(-1))
        return np.stack(rows)


def check(content: bytes, x: np.ndarray, reference: np.ndarray) -> Dict[str, object]:
    """Runs a model on TFLM: whether it runs (and why not), the smallest arena, and on the
    examples `x` its top-1 agreement with `reference` (the LiteRT interpreter's float
    outputs) and the largest absolute difference of the dequantized outputs."""
    arena, reason = smallest_arena(content)
    if arena is None:
        return {"runs": False, "reason": reason, "arena_bytes": None}
    try:
        outputs = MicroRunner(content, arena).predict(x)
    except Exception as e:  # noqa: BLE001 - recorded: a model that allocates but fails to run
        return {"runs": False, "reason": f"{type(e).__name__}: {e}", "arena_bytes": arena}
    return {
        "runs": True, "reason": "", "arena_bytes": int(arena), "examples": int(len(x)),
        "agreement_with_litert": float(np.mean(np.argmax(outputs, -1) == np.argmax(reference, -1))),
        "max_abs_error": float(np.max(np.abs(outputs - reference))) if len(x) else 0.0,
    }
