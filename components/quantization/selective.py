"""Accuracy-aware selective integer quantization.

QuantizationDebugger gives per-layer error statistics of the full-integer model (each op's
int8 output against the float op on the same inputs). Layers are ranked by RMSE/scale
(the error in units of the tensor's quantization step; MSE breaks ties), after the
elementwise ops that scale the model input before its first weighted layer (in-model
normalization: see input_scaling_ops). The search keeps
the k worst layers float (denylisted) for k = 0, then 1, 2, 4, … (doubling up to
max_float_layers), measuring accuracy on a validation sample, then bisects back to the
smallest k that passes. It stops when max_steps conversions are spent. The validation
sample must not be the gate's eval split: the caller passes it in.
"""
from __future__ import annotations

import csv
import io
import logging
import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
# The function QuantizationDebugger itself quantizes with; called directly so the search
# calibrates once and can keep integer input/output types (the debugger forces float I/O).
from tensorflow.lite.python import convert as _tflite_convert

from tfx_quantization.contracts import SELECTIVE_INTEGER, LayerError, SearchBudget, SearchStep, SelectiveSearch
from tfx_quantization.quantization import convert, variants
from tfx_quantization.quantization.interpreter import Inputs, TFLiteRunner, accuracy
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.settings import QuantizeSettings

log = logging.getLogger(__name__)


RECIPE = variants.recipe(SELECTIVE_INTEGER)


def _converter(saved_model_dir: str, calibration, signature: str, fixed_batch: int = 0):
    """The converter the search calibrates with (and the debugger measures through): the
    selective_integer recipe with float I/O (quantize_calibrated sets the final I/O types),
    traced with a fixed batch size when `fixed_batch` (convert.configure)."""
    return convert.configure(RECIPE.converter_settings(None), saved_model_dir, calibration, signature,
                             fixed_batch=fixed_batch)


def layer_errors(saved_model_dir: str, calibration, signature: str = "serving_default",
                 input_order: Optional[List[str]] = None, fixed_batch: int = 0) -> List[LayerError]:
    """Per-layer error statistics of full-integer quantization, worst first. The debugger
    takes each sample as a list in the model's input order (input_order: the names;
    data.representative_dataset yields dicts by name); fixed_batch: the batch size the
    signature is traced with (calibrate's second value)."""
    def as_lists():
        for sample in calibration():
            yield [sample[n] for n in input_order] if isinstance(sample, dict) else sample

    with convert.quiet_native_output():  # the debugger converts while it is built
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=_converter(saved_model_dir, calibration, signature, fixed_batch), debug_dataset=as_lists)
        debugger.run()
    buf = io.StringIO()
    debugger.layer_statistics_dump(buf)
    rows = []
    for r in csv.DictReader(io.StringIO(buf.getvalue())):
        mse, scale = float(r["mean_squared_error"]), float(r["scale"])
        rows.append(LayerError(
            tensor_name=r["tensor_name"], op_name=r["op_name"], mean_squared_error=mse, scale=scale,
            rmse_over_scale=math.sqrt(mse) / scale if scale > 0 else math.inf, max_abs_error=float(r["max_abs_error"])))
    rows.sort(key=lambda r: (-r.rmse_over_scale, -r.mean_squared_error))
    return rows


WEIGHTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"})
INPUT_SCALING_OPS = frozenset({"ADD", "SUB", "MUL", "DIV", "RSQRT", "SQRT", "MAXIMUM", "MINIMUM"})


def input_scaling_ops(calibrated: bytes) -> List[str]:
    """The output tensors of the elementwise ops that scale the model input before its first
    convolution or fully-connected layer (a Normalization or Rescaling layer inside the
    model), in graph order. Kept float, they move the int8 QUANTIZE after them, where one
    scale fits every feature; quantized, the raw input gets one int8 scale for features of
    any range, which the per-layer error ranking cannot see (each op's error is measured in
    its own output scale)."""
    interpreter = tf.lite.Interpreter(model_content=calibrated)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    prefix: List[str] = []
    for op in interpreter._get_ops_details():  # pylint: disable=protected-access
        if op["op_name"] in WEIGHTED_OPS:
            break
        if op["op_name"] in INPUT_SCALING_OPS:
            prefix += [names[i] for i in op["outputs"]]
    return prefix


def rank(errors: List[LayerError], first: List[str]) -> List[LayerError]:
    """The order in which layers are kept float: the input scaling ops first (in graph
    order), then the rest by error, worst first."""
    by_name = {r.tensor_name: r for r in errors}
    head = [by_name[n] for n in first if n in by_name]
    return head + [r for r in errors if r.tensor_name not in first]


def calibrate(saved_model_dir: str, calibration, signature: str = "serving_default") -> Tuple[bytes, int]:
    """(the float model with activation ranges recorded from the calibration data, the fixed
    batch size its signature was traced with: 0 for none). Converted as every variant is
    (convert.with_fixed_batch_retry): a model that needs static shapes (a recurrent layer)
    is calibrated through a batch-1 trace."""
    def attempt(fixed_batch: int) -> bytes:
        converter = _converter(saved_model_dir, calibration, signature, fixed_batch)
        converter.experimental_mlir_quantizer = True
        converter._experimental_calibrate_only = True  # pylint: disable=protected-access
        return converter.convert()

    return convert.with_fixed_batch_retry(attempt, f"{SELECTIVE_INTEGER} calibration")


def quantize_calibrated(calibrated: bytes, denylist: List[str], io_type: Optional[str]) -> bytes:
    """Full-integer quantization of a calibrated model with `denylist` kept float; integer
    input and output of type io_type ("int8", "uint8"), float ones when it is None."""
    io = tf.as_dtype(RECIPE.io_type(io_type))
    with convert.quiet_native_output():
        return _tflite_convert.mlir_quantize(
            calibrated, input_data_type=io, output_data_type=io, denylisted_nodes=list(denylist) or None)


def search(
    saved_model_dir: str,
    calibration: Callable,
    x_val: Inputs,
    y_val: np.ndarray,
    float_accuracy: float,
    settings: QuantizeSettings,
    io_type: Optional[str] = None,
    spec: Optional[ModelSpec] = None,
    ranged: Optional[bytes] = None,
) -> Tuple[Optional[bytes], SelectiveSearch]:
    """(model bytes or None, record). The record lists layer errors, every step, and the
    float layers of the result; None when no model passed within the budget.

    ranged: the calibrated model holding the activation ranges the range-method sweep chose
    (ranges.py), which every step quantizes instead of the converter's min/max calibration;
    the layers are still ranked by the debugger's min/max errors.

    Budget (from settings): accept an accuracy drop of at most effective_search_max_drop
    against the float model; keep at most max_float_layers float; spend at most
    max_search_steps conversions (each calibrated model is quantized and run once).
    """
    max_drop, max_steps = settings.effective_search_max_drop, settings.max_search_steps
    signature = spec.signature if spec else "serving_default"
    scores = spec.scores if spec else (lambda y: y)
    runner = (lambda c: TFLiteRunner.for_spec(c, spec)) if spec else TFLiteRunner
    calibrated, fixed_batch = calibrate(saved_model_dir, calibration, signature)
    calibrated = calibrated if ranged is None else ranged
    prefix = input_scaling_ops(calibrated)
    ranked = rank(layer_errors(saved_model_dir, calibration, signature, TFLiteRunner(calibrated).input_order(),
                               fixed_batch), prefix)
    limit = min(settings.max_float_layers, len(ranked))
    steps: List[SearchStep] = []
    models: Dict[int, bytes] = {}

    def try_k(k: int) -> bool:
        denylist = [r.tensor_name for r in ranked[:k]]
        content = quantize_calibrated(calibrated, denylist, io_type)
        acc = accuracy(scores(runner(content).predict(x_val)), y_val)
        drop = float_accuracy - acc
        passed = drop <= max_drop + 1e-9
        steps.append(SearchStep(num_float_layers=k, float_layers=denylist, validation_accuracy=acc, accuracy_drop=drop,
                                passed=passed))
        log.info("selective search: %d float layer(s): validation accuracy %.4f (drop %.4f) %s",
                 k, acc, drop, "passes" if passed else "fails")
        models[k] = content
        return passed

    best: Optional[int] = 0 if try_k(0) else None
    low, k = 0, 1
    while best is None and len(steps) < max_steps and k <= limit:
        if try_k(k):
            best = k
        else:
            low = k
        k = min(2 * k, limit) if k < limit else limit + 1
    # Bisect between the last failing and the first passing k for the fewest float layers.
    while best is not None and best - low > 1 and len(steps) < max_steps:
        mid = (low + best) // 2
        if try_k(mid):
            best = mid
        else:
            low = mid
    record = SelectiveSearch(
        ranking_metric="rmse_over_scale", input_scaling_ops=prefix, layer_errors=ranked, steps=steps,
        float_accuracy_on_validation=float_accuracy, num_validation_examples=int(len(y_val)),
        budget=SearchBudget(max_drop=max_drop, max_float_layers=settings.max_float_layers, max_steps=max_steps))
    if best is None:
        record.float_layers = None
        record.best_step = min(steps, key=lambda s: s.accuracy_drop)
        return None, record
    record.float_layers = steps_for(steps, best).float_layers
    record.integer_compute_fraction = convert.integer_compute_fraction(models[best])
    return models[best], record


def steps_for(steps: List[SearchStep], k: int) -> SearchStep:
    return next(s for s in steps if s.num_float_layers == k)
