"""The TFLite Micro interpreter, run in a child process by components/quantization/micro.py.

The host build of TFLM can crash the process (a segmentation fault) while failing to
allocate in some arena sizes, so every allocation attempt and every run happens here, in a
process of its own, importing only tflite-micro and numpy (fast to start). The runtime's own
messages go to stderr, where the parent reads them.

    python -m tfx_quantization.quantization.micro_probe probe MODEL ARENA       -> {"allocated": bool}
    python -m tfx_quantization.quantization.micro_probe bisect MODEL LOW HIGH
        the smallest arena in (LOW, HIGH] that allocates, HIGH known to allocate: one line
        {"try": size} before each attempt and {"size": size, "allocated": bool} after it, so
        that the parent knows which size crashed the process if it dies; then {"smallest": n}
    python -m tfx_quantization.quantization.micro_probe run MODEL ARENA IN OUT K
        IN.npz holds in0, in1, ... (the model's inputs in its input order, batched);
        OUT.npy: the raw values of output K, one row per example
"""
from __future__ import annotations

import json
import sys

import numpy as np


ALIGNMENT = 16  # TFLM's arena alignment: the bisection's resolution


def _allocates(runtime, content: bytes, arena: int) -> bool:
    try:
        runtime.Interpreter.from_bytes(content, arena_size=arena)
    except RuntimeError:
        return False
    return True


def bisect(runtime, content: bytes, low: int, high: int) -> int:
    """The smallest multiple of ALIGNMENT in (low, high] that allocates; `high` allocates."""
    while high - low > ALIGNMENT:
        mid = (low + high) // 2 // ALIGNMENT * ALIGNMENT
        if mid <= low:
            break
        print(json.dumps({"try": mid}), flush=True)
        ok = _allocates(runtime, content, mid)
        print(json.dumps({"size": mid, "allocated": ok}), flush=True)
        low, high = (low, mid) if ok else (mid, high)
    return high


def main(argv) -> int:
    from tflite_micro.python.tflite_micro import runtime

    command, model_path, arena = argv[0], argv[1], int(argv[2])
    with open(model_path, "rb") as f:
        content = f.read()
    if command == "bisect":
        print(json.dumps({"smallest": bisect(runtime, content, arena, int(argv[3]))}), flush=True)
        return 0
    try:
        interpreter = runtime.Interpreter.from_bytes(content, arena_size=arena)
    except RuntimeError:
        print(json.dumps({"allocated": False}), flush=True)
        return 0
    if command == "probe":
        print(json.dumps({"allocated": True}), flush=True)
        return 0
    held = np.load(argv[3])
    inputs = [held[f"in{i}"] for i in range(len(held.files))]
    output = int(argv[5])
    outputs = []
    for row in range(len(inputs[0])):
        for position, values in enumerate(inputs):
            interpreter.set_input(values[row][None], position)
        interpreter.invoke()
        outputs.append(np.array(interpreter.get_output(output)).reshape(-1))
    np.save(argv[4], np.stack(outputs) if outputs else np.zeros((0,)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
