"""Quantization-aware training surgery on a tf_keras model (tensorflow-model-optimization).

The QAT copy of a float model (`quantization_aware_copy`: tfmot's quantize_apply, with the
layers tfmot cannot rebuild left float, in-model input normalization kept float and
adapted state finalized) and its starting activation ranges from the float model's own
activations (`initialize_quantization_ranges`). Used by both training stages (QATTrainer,
QATFineTuner) through tfx_quantization.training; no TFX import.
"""
from __future__ import annotations

import contextlib
import logging
import re
from typing import Dict, Iterable, Iterator, List, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer
from tensorflow_model_optimization.python.core.quantization.keras import quantizers as tfmot_quantizers
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_configs
from tf_keras.src.saving import serialization_lib

log = logging.getLogger(__name__)
MAX_SHOWN = 8


_UNSUPPORTED_LAYER = re.compile(r"Layer (\S+?):<class")


# Output range only: the layer computes in float, what follows it sees int8 values.
_OUTPUT_ONLY = default_8bit_quantize_configs.Default8BitOutputQuantizeConfig()


def _reads_model_input(model: keras.Model, layer) -> bool:
    """Whether every input of `layer` is a model input."""
    try:
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    except (AttributeError, ValueError):  # a layer used at several places has no single input
        return False
    return all(any(t is i for i in model.inputs) for t in inputs)


def _keep_float_inputs(qat: keras.Model, float_input_layers) -> None:
    """Turns off the input quantization tfmot puts before the float layers on the model input:
    their input stays float, as the float model's does (one int8 scale cannot hold raw
    features of different ranges; their outputs carry the range instead)."""
    for layer in qat.layers:
        if not isinstance(layer, quantize_layer.QuantizeLayer):
            continue
        consumers = [n.outbound_layer for n in layer.outbound_nodes]
        if consumers and all(getattr(c, "layer", c).name in float_input_layers for c in consumers):
            layer.quantizer = None


def nested_model_reason(model: keras.Model) -> str:
    """Why tfmot cannot make `model` quantization-aware, as its layers alone tell (so known
    before any training): it uses another model as a layer, and tfmot quantizes no model
    inside a model. '' when it does not."""
    nested = [l.name for l in model.layers if isinstance(l, keras.Model)]
    if not nested:
        return ""
    return (f"the model nests model(s) {nested[:MAX_SHOWN]} as layers; tfmot cannot quantize nested models: build the "
            "inner model's layers directly on the outer input (see components/models)")


def quantization_aware_copy(model: keras.Model) -> Tuple[keras.Model, List[str]]:
    """A quantization-aware copy of `model` carrying its weights, and the layers left float.

    `quantize_model` when tfmot accepts every layer. Otherwise selective QAT: every layer is
    annotated except the ones tfmot rejects (Normalization, Rescaling, Resizing, Lambda,
    custom layers, ...), which stay float; the rejected set is grown from tfmot's own errors,
    so layers it handles only through its graph transforms (BatchNormalization folded into a
    convolution) are still quantized. A float layer that reads the model input (in-model
    normalization) keeps a float input and gets an output range: the int8 part of the model
    starts after it. Raises ValueError when no layer can be quantized.
    """
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    nested = nested_model_reason(model)
    if nested:
        raise ValueError(nested)
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    if not any(registry.supports(l) for l in layers):
        raise ValueError(
            f"no layer of model {model.name!r} can be quantized by tfmot; quantization-aware "
            "training needs at least one supported layer (Conv2D, Dense, ...)"
        )
    custom = {type(l).__name__: type(l) for l in layers}
    custom[type(_OUTPUT_ONLY).__name__] = type(_OUTPUT_ONLY)
    reads_input = {l.name for l in layers if _reads_model_input(model, l)}
    left_float: List[str] = []
    for _ in range(len(layers) + 1):
        float_set = set(left_float)

        def annotate(layer):
            # Returning the original layer objects keeps the trained weights;
            # quantize_apply copies them into the quantized model.
            if isinstance(layer, keras.layers.InputLayer):
                return layer
            if layer.name in float_set:
                # A float layer on the model input (a Normalization or Rescaling) computes in
                # float; its output is where int8 starts, so it gets an output range.
                if layer.name in reads_input:
                    return tfmot.quantization.keras.quantize_annotate_layer(layer, _OUTPUT_ONLY)
                return layer
            return tfmot.quantization.keras.quantize_annotate_layer(layer)

        annotated = keras.models.clone_model(model, clone_function=annotate)
        try:
            # tfmot clones the model through Keras serialization, whose safe mode refuses
            # Lambda layers holding Python functions. This is the user's own model, built
            # in this process from their module: allowing it here loads nothing foreign.
            with tfmot.quantization.keras.quantize_scope(custom), serialization_lib.SafeModeScope(False):
                qat = tfmot.quantization.keras.quantize_apply(annotated)
        except RuntimeError as e:
            match = _UNSUPPORTED_LAYER.search(str(e))
            if not match or match.group(1) in float_set:
                raise
            left_float.append(match.group(1))
            continue
        _keep_float_inputs(qat, {n for n in float_set if n in reads_input})
        for layer in qat.layers:
            # quantize_apply sets the weights after building, but preprocessing layers
            # (Normalization) compute what they use from their weights only in
            # finalize_state: without this call an adapted Normalization is an identity.
            getattr(layer, "layer", layer).finalize_state()
        if left_float:
            log.info("Selective QAT: %d layer(s) left float: %s", len(left_float), left_float)
        order = [l.name for l in layers]
        return qat, sorted(left_float, key=order.index)
    raise ValueError(f"could not make model {model.name!r} quantization-aware")


# The quantizers that learn an activation range from the data (the model input's, each
# activation's); weight quantizers (LastValueQuantizer) read the weights themselves.
_RANGE_QUANTIZERS = (tfmot_quantizers.MovingAverageQuantizer, tfmot_quantizers.AllValuesQuantizer)


@contextlib.contextmanager
def _float_forward_recording(ranges: Dict[object, list]) -> Iterator[None]:
    """While active, tfmot's quantizers pass values through unchanged (the model computes in
    float, as the float model does) and the range quantizers record the min and max of what
    they see, by their min variable. tfmot has no hook for this: the quantizer classes'
    __call__ is swapped for the duration and restored after."""
    def record(self, inputs, training, weights, **kwargs):
        low, high = weights["min_var"], weights["max_var"]
        axes = list(range(inputs.shape.rank - low.shape.rank))  # per-axis ranges keep the last axis
        lo, hi = tf.reduce_min(inputs, axis=axes).numpy(), tf.reduce_max(inputs, axis=axes).numpy()
        seen = ranges.setdefault(low.ref(), [low, high, lo, hi])
        seen[2], seen[3] = np.minimum(seen[2], lo), np.maximum(seen[3], hi)
        return inputs

    with _calls_replaced({tfmot_quantizers.LastValueQuantizer: _passthrough, **{c: record for c in _RANGE_QUANTIZERS}}):
        yield


def _passthrough(self, inputs, *args, **kwargs):
    return inputs


@contextlib.contextmanager
def _calls_replaced(calls: Dict[type, object]) -> Iterator[None]:
    """While active, each quantizer class's __call__ is the given function; restored after
    (tfmot has no hook for computing in float or recording ranges)."""
    saved = {cls: cls.__dict__.get("__call__", cls.__call__) for cls in calls}
    try:
        for cls, call in calls.items():
            cls.__call__ = call
        yield
    finally:
        for cls, call in saved.items():
            cls.__call__ = call


def _all_quantizer_classes() -> List[type]:
    """Every tfmot quantizer class that defines its own __call__."""
    seen, stack = [], [tfmot_quantizers.Quantizer]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if "__call__" in sub.__dict__ and sub not in seen:
                seen.append(sub)
    return seen


@contextlib.contextmanager
def quantizers_passed_through() -> Iterator[None]:
    """While active, every tfmot quantizer (weights, activations, fixed ranges) returns its
    input unchanged: the quantization-aware copy computes in float, the function the float
    model computes if the copy is faithful."""
    with _calls_replaced({cls: _passthrough for cls in _all_quantizer_classes()}):
        yield


# Largest difference of class probabilities between the float model and its QAT copy with
# the quantizers passed through (float32 rounding and folded batch norms stay far below it).
COPY_TOLERANCE = 1e-3


class QATCopyMismatch(ValueError):
    """The quantization-aware copy does not compute the float model's function."""


def check_copy(float_model: keras.Model, qat_model: keras.Model, x, to_probabilities,
               tolerance: float = COPY_TOLERANCE) -> float:
    """Runs the float model and its quantization-aware copy (quantizers passed through) on
    the model inputs `x`; returns the largest absolute difference of their class
    probabilities (`to_probabilities` maps raw outputs to them: one array, or a multi-output
    model's list). Raises QATCopyMismatch when
    it exceeds `tolerance`: tfmot rebuilt a different graph (tensorflow/model-optimization
    #1179 reorders a Concatenate's inputs when a model input is declared after the layer it
    is concatenated with), and fine-tuning would train that other function."""
    def values(y):  # a multi-output model returns a list
        return [t.numpy() for t in y] if isinstance(y, (list, tuple)) else y.numpy()

    expected = to_probabilities(values(float_model(x, training=False)))
    with quantizers_passed_through():
        got = to_probabilities(values(qat_model(x, training=False)))
    diff = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64))))
    if not diff <= tolerance:
        raise QATCopyMismatch(
            f"the quantization-aware copy computes a different function from the float model: with its quantizers "
            f"passed through, class probabilities differ by up to {diff:.4f} (> {tolerance:g}) on a train batch; "
            "tfmot rewired the graph (e.g. tensorflow/model-optimization#1179: a Concatenate's inputs reordered when "
            "a model input is declared after the layer it is concatenated with; declare the model inputs in the "
            "order they are used)")
    return diff


def initialize_quantization_ranges(qat_model: keras.Model, batches: Iterable) -> int:
    """Sets every activation range of a quantization-aware model to the min and max its float
    forward pass reaches on `batches` (model inputs), as post-training calibration does;
    returns how many ranges were set.

    tfmot starts each activation range at [-6, 6] and moves it towards the batch ranges by an
    EMA with decay 0.999: after a fine-tuning of a few hundred steps the ranges are still
    close to [-6, 6] (measured: MobileNetV2-style digits, 2 epochs), so every small activation
    gets a handful of int8 steps and every large one is clipped, and QAT ends below plain
    post-training quantization. Started from the calibrated ranges, fine-tuning adapts the
    weights to the quantization the converted model will have.
    """
    ranges: Dict[object, list] = {}
    with _float_forward_recording(ranges):
        for x in batches:
            qat_model(x, training=False)
    for low, high, lo, hi in ranges.values():
        low.assign(np.minimum(lo, 0.0).astype(np.float32))  # TFLite needs 0 inside every range
        high.assign(np.maximum(hi, 0.0).astype(np.float32))
    return len(ranges)
