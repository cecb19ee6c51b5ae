"""TFLite Micro on the host (PyPI `tflite-micro`): does a model load and run on the
microcontroller runtime, how much tensor arena does it need, and do its outputs agree
with the LiteRT interpreter's.

The arena figure is the smallest arena in which TFLM allocates the model's tensors (a
bisection to 16 bytes, TFLM's alignment, in one child process: about 24 attempts), measured
with TFLM's default recording allocator;
on a device add the few hundred bytes its own interpreter bookkeeping takes. What the
runtime prints when it refuses a model ("Hybrid models are not supported on TFLite Micro.")
is recorded as the reason.

The host build of TFLM can crash its process (a segmentation fault) while failing to
allocate in some arena sizes (seen here with MobileNetV2-style models), so the attempts
run in a child process (micro_probe.py, which imports only tflite-micro and numpy) that says
which size it tries before trying it: a crash counts as "does not allocate at this size",
the bisection goes on in a new child from there, and it is never the caller's crash.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Dict, Optional, Tuple

import numpy as np

from tfx_quantization.quantization.interpreter import Inputs, TFLiteRunner, dequantize
from tfx_quantization.quantization.micro_probe import ALIGNMENT as ARENA_ALIGNMENT

MAX_ARENA_BYTES = 256 << 20  # above this, the model is not a microcontroller model
CHILD_TIMEOUT_S = 600


def _reason(native: str) -> str:
    """The runtime's own explanation: its printed lines, without the file:line prefixes."""
    lines = [re.sub(r"^\S+\.cc(:\d+)?\s*", "", line).strip() for line in native.splitlines()
             if line.strip() and "Warning" not in line]
    return "; ".join(lines[:3])


def _child(*args: str) -> subprocess.CompletedProcess:
    # The installed package: the child imports only tflite-micro and this package's probe.
    return subprocess.run([sys.executable, "-m", "tfx_quantization.quantization.micro_probe", *args],
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)


def allocates(model_path: str, arena_bytes: int) -> Tuple[bool, str]:
    """(True, '') when TFLM allocates the model in `arena_bytes`; else (False, why)."""
    done = _child("probe", model_path, str(int(arena_bytes)))
    if done.returncode != 0:
        return False, f"the TFLite Micro runtime crashed (exit status {done.returncode}) {_reason(done.stderr)}".strip()
    if json.loads(done.stdout.strip().splitlines()[-1])["allocated"]:
        return True, ""
    return False, _reason(done.stderr) or "TFLM failed to allocate tensors"


def smallest_arena(model_path: str, ceiling: int = MAX_ARENA_BYTES) -> Tuple[Optional[int], Optional[str]]:
    """(the smallest arena in bytes that allocates the model, None) or (None, the reason it
    does not allocate even in `ceiling` bytes)."""
    ok, reason = allocates(model_path, ceiling)
    if not ok:
        return None, reason
    low, high = 0, ceiling  # low does not allocate (or is 0), high does
    while high - low > ARENA_ALIGNMENT:
        done = _child("bisect", model_path, str(low), str(high))
        tried = None
        for line in done.stdout.splitlines():
            record = json.loads(line)
            if "smallest" in record:
                return int(record["smallest"]), None
            if "try" in record:
                tried = int(record["try"])
            elif record["allocated"]:
                high, tried = int(record["size"]), None
            else:
                low, tried = int(record["size"]), None
        if tried is None:  # died before trying a size: nothing to learn from a new child
            raise RuntimeError(f"the TFLite Micro probe failed (exit status {done.returncode}): {_reason(done.stderr)}")
        low = tried  # the size that crashed the child does not allocate
    return high, None


def run(model_path: str, arena_bytes: int, x: Inputs, spec=None) -> np.ndarray:
    """Float outputs [B, units] of TFLM for float inputs [B, ...] (one array, or a dict by
    input name), quantized and dequantized exactly as TFLiteRunner does (round, then clip).
    spec (a ModelSpec): which signature output to read. Raises RuntimeError when TFLM fails."""
    # LiteRT for the I/O quantization parameters and the input/output order only.
    litert = (TFLiteRunner.for_spec(model_path, spec, use_xnnpack=False) if spec
              else TFLiteRunner(model_path, use_xnnpack=False))
    named = litert.named_inputs(x)
    held = {f"in{i}": litert.prepare_input(named[n], n) for i, n in enumerate(litert.input_order())}
    output = [d["index"] for d in litert.interpreter.get_output_details()].index(litert.output["index"])
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(os.path.join(tmp, "in.npz"), **held)
        done = _child("run", model_path, str(int(arena_bytes)), os.path.join(tmp, "in.npz"),
                      os.path.join(tmp, "out.npy"), str(output))
        if done.returncode != 0 or not os.path.exists(os.path.join(tmp, "out.npy")):
            raise RuntimeError(f"TFLite Micro failed to run the model (exit status {done.returncode}): "
                               f"{_reason(done.stderr)}")
        y = np.load(os.path.join(tmp, "out.npy"))
    if np.issubdtype(y.dtype, np.integer):
        scale, zero_point = litert.output["quantization"]
        return dequantize(y, scale, zero_point)
    return y.astype(np.float32)


def check(content: bytes, x: Inputs, reference: np.ndarray, spec=None) -> Dict[str, object]:
    """Runs a model on TFLM: whether it runs (and why not), the smallest arena, and on the
    examples `x` its top-1 agreement with `reference` (the LiteRT interpreter's float
    outputs) and the largest absolute difference of the dequantized outputs."""
    scores = spec.scores if spec else (lambda y: y)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(content)
        arena, reason = smallest_arena(path)
        if arena is None:
            return {"runs": False, "reason": reason, "arena_bytes": None}
        try:
            outputs = run(path, arena, x, spec)
        except RuntimeError as e:  # recorded: a model that allocates but fails to run
            return {"runs": False, "reason": str(e), "arena_bytes": arena}
    return {
        "runs": True, "reason": "", "arena_bytes": int(arena), "examples": int(len(outputs)),
        "agreement_with_litert": float(np.mean(np.argmax(scores(outputs), -1) == np.argmax(scores(reference), -1))),
        "max_abs_error": float(np.max(np.abs(outputs - reference))) if len(outputs) else 0.0,
    }
