"""Running a TFLite model on float inputs: batching, int8/uint8 input quantization with
round-then-clip, output dequantization, and single-example latency timing.

One home for the interpreter: the quantizer's validation, the evaluator, the selective
search and the benchmarks all use TFLiteRunner.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, Union

import numpy as np
import tensorflow as tf

from components import fsutil
from components.contracts import VERBOSE_VAR

OpResolver = tf.lite.experimental.OpResolverType
log = logging.getLogger(__name__)


@contextlib.contextmanager
def captured_native_output() -> Iterator[List[str]]:
    """Captures what native code prints straight to the process's stdout and stderr (past
    Python logging): the yielded list holds the text once the block ends."""
    captured: List[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(held.fileno(), 1)
        os.dup2(held.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            held.seek(0)
            captured.append(held.read().decode("utf-8", "replace").strip())


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Holds back what TensorFlow Lite's converter prints from C++ straight to the
    process's stdout and stderr ("Ignored output_format", "fully_quantize: 0, ..."), past
    Python logging and TF_CPP_MIN_LOG_LEVEL. The lines go to this module's log at DEBUG,
    or at WARNING when the conversion fails. With QP_VERBOSE set they are left alone."""
    if os.environ.get(VERBOSE_VAR, "") not in ("", "0", "false"):
        yield
        return
    failed = False
    try:
        with captured_native_output() as captured:
            try:
                yield
            except BaseException:
                failed = True
                raise
    finally:
        text = captured[0] if captured else ""
        if text:
            log.log(logging.WARNING if failed else logging.DEBUG, "converter output:\n%s", text[-4000:])


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype) -> np.ndarray:
    """Real values -> integer tensor values: round to nearest, then clip to the dtype range.

    (TFMA's tf_lite path truncates with a plain cast and does not clip, so values beyond
    the representable range wrap around.)
    """
    if scale <= 0:
        raise ValueError(f"input tensor has quantization scale {scale}: cannot quantize")
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float64) / scale + zero_point)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class TFLiteRunner:
    """Holds one interpreter; `predict` takes float inputs [B, ...] and returns float outputs."""

    def __init__(self, model: Union[bytes, str, Path], num_threads: int = 1, use_xnnpack: bool = True):
        content = model if isinstance(model, (bytes, bytearray)) else fsutil.read_bytes(model)
        self.num_threads = num_threads
        self.use_xnnpack = use_xnnpack
        with quiet_native_output():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter = tf.lite.Interpreter(
                model_content=bytes(content),
                num_threads=num_threads,
                experimental_op_resolver_type=(
                    OpResolver.AUTO if use_xnnpack else OpResolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                ),
            )
            self.interpreter.allocate_tensors()
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"the model has {len(inputs)} inputs; only single-input models are supported")
        self.input = inputs[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = [int(d) for d in self.input["shape"][1:]]
        self._batch = int(self.input["shape"][0])

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self.input["index"], [batch, *self.input_shape], strict=False)
            self.interpreter.allocate_tensors()
            self._batch = batch

    def prepare_input(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if np.issubdtype(dtype, np.integer):
            scale, zero_point = self.input["quantization"]
            return quantize(x, scale, zero_point, dtype)
        return np.asarray(x, dtype=dtype)

    def check_input_shape(self, x: np.ndarray) -> None:
        if list(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"input of shape {list(x.shape[1:])} does not match the model input {self.input_shape}"
            )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float outputs [B, C] for float inputs [B, *input_shape], in one invoke."""
        x = np.asarray(x)
        self.check_input_shape(x)
        self._resize(len(x))
        self.interpreter.set_tensor(self.input["index"], self.prepare_input(x))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero_point = self.output["quantization"]
            return dequantize(y, scale, zero_point)
        return y.astype(np.float32)

    def time_single_example(self, example: np.ndarray, runs: int = 100, warmup: int = 10) -> Dict[str, float]:
        """Median and p90 wall time (ms) of invoke() on one example, after warm-up."""
        x = np.asarray(example)[None] if np.asarray(example).ndim == len(self.input_shape) else np.asarray(example)[:1]
        self.check_input_shape(x)
        self._resize(1)
        self.interpreter.set_tensor(self.input["index"], self.prepare_input(x))
        for _ in range(warmup):
            self.interpreter.invoke()
        times: List[float] = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append((time.perf_counter() - start) * 1e3)
        return {
            "latency_ms_median": float(np.median(times)),
            "latency_ms_p90": float(np.percentile(times, 90)),
            "latency_ms_iqr": float(np.percentile(times, 75) - np.percentile(times, 25)),
            "latency_runs": runs,
            "num_threads": self.num_threads,
            "xnnpack": self.use_xnnpack,
        }


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=-1) == labels)) if len(labels) else float("nan")
