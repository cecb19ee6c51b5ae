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
from typing import Dict, Iterator, List, Optional, Union

import numpy as np
import tensorflow as tf

from tfx_quantization import fsutil
from tfx_quantization.contracts import VERBOSE_VAR

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
def quiet_native_output(failure_level: int = logging.WARNING) -> Iterator[None]:
    """Holds back what TensorFlow Lite's converter prints from C++ straight to the
    process's stdout and stderr ("Ignored output_format", "fully_quantize: 0, ..."), past
    Python logging and TF_CPP_MIN_LOG_LEVEL. The lines go to this module's log at DEBUG,
    or at `failure_level` when the conversion fails. With QP_VERBOSE set they are left alone."""
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
            log.log(failure_level if failed else logging.DEBUG, "converter output:\n%s", text[-4000:])


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


Inputs = Union[np.ndarray, Dict[str, np.ndarray]]  # one array (a one-input model) or {input name: array}


def batch_length(x: Inputs) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x: Inputs, index) -> Inputs:
    """Rows `index` (a slice, mask or index array) of every input."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


# Runtimes a .tflite runs in (the manifest's `runtime`): TensorFlow's own interpreter, or
# LiteRT's (PyPI ai-edge-litert) for what TensorFlow 2.16's kernels cannot compute.
TENSORFLOW_LITE, AI_EDGE_LITERT = "tensorflow-lite", "ai-edge-litert"
FOUR_BIT_TYPES = {17: "int4", 20: "uint4"}  # schema TensorType INT4, UINT4 -> the manifest's dtype name
_BLOCKWISE = 2  # schema QuantizationDetails BlockwiseQuantization


def _schema_model(content: bytes):
    from tensorflow.lite.python import schema_py_generated as schema  # pylint: disable=import-outside-toplevel

    return schema.Model.GetRootAs(bytes(content), 0)


def four_bit_tensors(content: bytes) -> Dict[int, str]:
    """{tensor index in subgraph 0: "int4" or "uint4"} of a model's 4-bit tensors, read from
    the flatbuffer's tensor types (TensorFlow's schema module). TensorFlow 2.16's interpreter
    reports an INT4 tensor as int8 (its get_tensor_details), so a description by dtype counts
    4-bit weights as 8-bit ones."""
    model = _schema_model(content)
    if not model.SubgraphsLength():
        return {}
    subgraph = model.Subgraphs(0)
    return {t: FOUR_BIT_TYPES[subgraph.Tensors(t).Type()] for t in range(subgraph.TensorsLength())
            if subgraph.Tensors(t).Type() in FOUR_BIT_TYPES}


def litert_only(content: bytes) -> Dict[str, bool]:
    """What of a model TensorFlow 2.16's interpreter cannot run correctly: {"int4": it holds
    4-bit tensors (LiteRT Quantizer's int4 weights: TF 2.16 loads them without an error and
    computes wrong outputs; measured: 12 % argmax agreement with the float model where
    ai-edge-litert 2.3 gives 86 %), "blockwise": it holds blockwise-quantized tensors (correct
    in ai-edge-litert's XNNPACK kernels only: its builtin kernels disagree with them)}. Read
    from the flatbuffer (TensorFlow's schema module), without running anything."""
    model = _schema_model(content)
    found = {"int4": False, "blockwise": False}
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            found["int4"] |= tensor.Type() in FOUR_BIT_TYPES
            quantization = tensor.Quantization()
            found["blockwise"] |= quantization is not None and quantization.DetailsType() == _BLOCKWISE
    return found


def runtime_for(content: bytes) -> str:
    """The interpreter TFLiteRunner runs the model in: AI_EDGE_LITERT for int4 or blockwise
    weights (litert_only), TENSORFLOW_LITE otherwise."""
    return AI_EDGE_LITERT if any(litert_only(content).values()) else TENSORFLOW_LITE


def _litert_interpreter():
    try:
        from ai_edge_litert import interpreter as litert  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ImportError(f"this model holds 4-bit or blockwise weights, which TensorFlow {tf.__version__}'s "
                          f"interpreter computes wrongly; it runs in ai-edge-litert ({e}): pip install "
                          "ai-edge-litert==2.3.0") from None
    return litert


class TFLiteRunner:
    """Holds one interpreter; `predict` takes float inputs [B, ...] (one array, or a dict by
    signature input name) and returns the raw outputs [B, units] as float32."""

    def __init__(self, model: Union[bytes, str, Path], num_threads: int = 1, use_xnnpack: bool = True,
                 signature: str = "serving_default", output_name: str = "", preserve_all_tensors: bool = False):
        content = model if isinstance(model, (bytes, bytearray)) else fsutil.read_bytes(model)
        self.num_threads = num_threads
        self.use_xnnpack = use_xnnpack
        needs = litert_only(content)
        self.runtime = AI_EDGE_LITERT if any(needs.values()) else TENSORFLOW_LITE
        if needs["blockwise"] and not use_xnnpack:
            raise ValueError("blockwise-quantized weights run correctly only in ai-edge-litert's XNNPACK kernels: "
                             "use_xnnpack=True")
        if self.runtime == AI_EDGE_LITERT:
            litert = _litert_interpreter()
            interpreter_class, resolver = litert.Interpreter, litert.OpResolverType
        else:
            interpreter_class, resolver = tf.lite.Interpreter, OpResolver
        with quiet_native_output():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            self.interpreter = interpreter_class(
                model_content=bytes(content),
                num_threads=num_threads,
                experimental_op_resolver_type=(
                    resolver.AUTO if use_xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
                ),
                # Every intermediate tensor kept readable after invoke (ranges.collect; no delegate then).
                experimental_preserve_all_tensors=preserve_all_tensors,
            )
            self.interpreter.allocate_tensors()
        # Inputs and outputs by their signature names (the SavedModel signature's names),
        # which the converter keeps; a model without signatures: by tensor name.
        details = {d["index"]: d for d in self.interpreter.get_input_details() + self.interpreter.get_output_details()}
        signatures = self.interpreter._get_full_signature_list()  # pylint: disable=protected-access
        if signatures:
            sig = signatures.get(signature) or next(iter(signatures.values()))
            self.inputs = {n: details[i] for n, i in sorted(sig["inputs"].items(), key=lambda kv: kv[1])}
            self.outputs = {n: details[i] for n, i in sig["outputs"].items()}
        else:
            self.inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
            self.outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        self.output_name = next(iter(self.outputs))
        self.output = self.outputs[self.output_name]
        if output_name:
            self.select_output(output_name)
        self.shapes = {n: [int(v) for v in d["shape"][1:]] for n, d in self.inputs.items()}
        self.input = next(iter(self.inputs.values()))  # the first input (one-input callers)
        self.input_shape = next(iter(self.shapes.values()))
        self._batch = int(self.input["shape"][0])
        # A model converted with a fixed batch size (convert.fixed_batch_converter: recurrent
        # layers) cannot be resized: it is fed that many examples at a time. 0: any batch.
        self.fixed_batch = max(int(self.input["shape_signature"][0]), 0) if len(self.input["shape_signature"]) else 0

    @classmethod
    def for_spec(cls, model: Union[bytes, str, Path], spec, **kw) -> "TFLiteRunner":
        """A runner reading the spec's signature and class-score output (a ModelSpec)."""
        return cls(model, signature=spec.signature, output_name=spec.output_name, **kw)

    def select_output(self, name: str) -> None:
        """Read output `name` (a signature output name) from now on."""
        if name not in self.outputs:
            raise ValueError(f"the model has no output {name!r} (it has {sorted(self.outputs)})")
        self.output_name, self.output = name, self.outputs[name]

    def input_order(self) -> List[str]:
        """The signature input names in the model's own input order (the order tools that
        take a list of inputs use: TFLite Micro, the QuantizationDebugger)."""
        position = {d["index"]: i for i, d in enumerate(self.interpreter.get_input_details())}
        return sorted(self.inputs, key=lambda n: position[self.inputs[n]["index"]])

    def named_inputs(self, x: Inputs) -> Dict[str, np.ndarray]:
        if not isinstance(x, dict):
            if len(self.inputs) != 1:
                raise ValueError(f"the model takes {len(self.inputs)} inputs {list(self.inputs)}: pass a dict")
            return {next(iter(self.inputs)): np.asarray(x)}
        missing = sorted(set(self.inputs) - set(x))
        if missing:
            raise ValueError(f"no values for the model input(s) {missing} (given: {sorted(x)})")
        return {n: np.asarray(x[n]) for n in self.inputs}

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            for name, d in self.inputs.items():
                self.interpreter.resize_tensor_input(d["index"], [batch, *self.shapes[name]], strict=False)
            self.interpreter.allocate_tensors()
            self._batch = batch

    def prepare_input(self, x: np.ndarray, name: Optional[str] = None) -> np.ndarray:
        detail = self.inputs[name] if name else self.input
        dtype = detail["dtype"]
        if np.issubdtype(dtype, np.integer) and detail["quantization"][0] > 0:
            scale, zero_point = detail["quantization"]
            return quantize(x, scale, zero_point, dtype)
        return np.asarray(x, dtype=dtype)

    def check_input_shape(self, x: Inputs) -> None:
        for name, values in self.named_inputs(x).items():
            if list(values.shape[1:]) != self.shapes[name]:
                raise ValueError(f"input {name!r} of shape {list(values.shape[1:])} does not match the model input "
                                 f"{self.shapes[name]}")

    def _set(self, x: Dict[str, np.ndarray]) -> None:
        for name, values in x.items():
            self.interpreter.set_tensor(self.inputs[name]["index"], self.prepare_input(values, name))

    def predict(self, x: Inputs) -> np.ndarray:
        """Float outputs [B, units] of the selected output (select_output) for float inputs
        [B, ...], in one invoke (a fixed-batch model: one invoke per `fixed_batch` examples,
        the last chunk padded)."""
        return self.predict_outputs(x, [self.output_name])[self.output_name]

    def predict_outputs(self, x: Inputs, names: List[str]) -> Dict[str, np.ndarray]:
        """{output name: float outputs [B, ...]} of the signature outputs `names`, read by
        name (never by position: the converter may order a multi-output model's tensors
        differently from the signature), all from the same invoke; integer outputs are
        dequantized with their own scale and zero point. A ValueError names a missing output."""
        missing = [n for n in names if n not in self.outputs]
        if missing:
            raise ValueError(f"the model has no output(s) {missing} (it has {sorted(self.outputs)})")
        x = self.named_inputs(x)
        self.check_input_shape(x)
        n, size = batch_length(x), self.fixed_batch
        if size and n != size:
            chunks = []
            for start in range(0, n, size):
                index = np.minimum(np.arange(start, start + size), n - 1)  # pads by repeating the last example
                got = self.predict_outputs(take(x, index), names)
                chunks.append({k: v[:min(size, n - start)] for k, v in got.items()})
            return {k: np.concatenate([c[k] for c in chunks]) if chunks
                    else np.zeros([0, *self.outputs[k]["shape"][1:]], np.float32) for k in names}
        self._resize(n)
        self._set(x)
        # A recurrent op keeps its state in variable tensors that carry over to the next
        # invoke (a converted LSTM would start from the previous example's final state).
        self.interpreter.reset_all_variables()
        self.interpreter.invoke()
        return {k: self._read(self.outputs[k]) for k in names}

    def _read(self, detail: dict) -> np.ndarray:
        y = self.interpreter.get_tensor(detail["index"])
        if np.issubdtype(y.dtype, np.integer):
            scale, zero_point = detail["quantization"]
            return dequantize(y, scale, zero_point)
        return y.astype(np.float32)

    def time_single_example(self, example: Inputs, runs: int = 100, warmup: int = 10) -> Dict[str, float]:
        """Median and p90 wall time (ms) of invoke() on one example, after warm-up. `example`:
        one example without the batch dimension, or a batch whose first row is used."""
        x = {n: v[None] if v.ndim == len(self.shapes[n]) else v[:1] for n, v in self.named_inputs(example).items()}
        self.check_input_shape(x)
        self._resize(1)
        self._set(x)
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
