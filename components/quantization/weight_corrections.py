"""Weight-side corrections of a float tf_keras model before integer conversion: cross-layer
equalization and empirical bias correction. Both keep the model float; the integer variants
then convert from the corrected SavedModel (post_training_quantizer/build.py).

Source: Nagel, van Baalen, Blankevoort, Welling, "Data-Free Quantization Through Weight
Equalization and Bias Correction", ICCV 2019 (arXiv:1906.04721), sections 4.1 (equalization)
and 4.2 (bias correction; here its empirical form, measured on the calibration sample).

Cross-layer equalization. For a pair W1 -> f -> W2 where f is positively homogeneous per
channel (f(x / s) = f(x) / s for s > 0: ReLU, identity, max pooling, dropout, zero padding,
flatten), output channel i of W1 (and its bias) is divided by s_i and input channel i of W2
multiplied by s_i, with s_i = sqrt(r1_i * r2_i) / r2_i, r1_i and r2_i being the largest
absolute weight of that channel in W1 (batch norm folded) and W2. The float function is
unchanged; afterwards both channels span sqrt(r1_i * r2_i), so the ranges of W1's channels
are evened out (they come closer to the tensor's largest). Pairs are equalized repeatedly
until the scales converge (the paper's iteration for chains of more than two layers).

ReLU6 is not positively homogeneous (relu6(x / s) * s = min(max(x, 0), 6 s)): a pair through
ReLU6 (MobileNetV2's blocks) is skipped and recorded, so the float model stays exactly what
was trained. (AIMET instead replaces ReLU6 by ReLU, which changes the float model; not done.)

Batch normalization right after a linear Conv2D / DepthwiseConv2D / Dense is folded in the
arithmetic (the converter folds it the same way): its gamma and beta carry the 1/s scaling
and bias correction's shift, the layer's own kernel stays as it is.

Empirical bias correction. Weight quantization changes each output channel's expected value:
E[W_q x_q] - E[W x] != 0 (x_q: the layer's input in the model whose earlier layers already
have quantized, corrected weights; x: in the float model). That per-channel mean error,
measured on the calibration sample after the preceding layers were corrected (sequentially,
in graph order), is subtracted from the bias (or from the following batch norm's beta). The
weights are quantized as TFLite's converter quantizes them for the int8 variants: int8,
symmetric, narrow range [-127, 127], scale = max|w| / 127 per output channel for Conv2D and
DepthwiseConv2D, one scale for the whole kernel for Dense (TF 2.16's FULLY_CONNECTED: see
tests/test_weight_corrections.py, which checks it against a converted model).

Only exact layer types are handled (Conv2D, DepthwiseConv2D, Dense, channels last); other
weighted layers (Conv1D/3D, transposed and separable convolutions) are left as they are and
listed as skipped. No TFX import; the caller loads and saves the model.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfx_quantization.contracts import CorrectedLayer, EqualizedPair, SkippedPair

log = logging.getLogger(__name__)

CROSS_LAYER_EQUALIZATION, BIAS_CORRECTION = "cross_layer_equalization", "bias_correction"
WEIGHTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
INT8_MAX = 127  # narrow range: the converter's symmetric int8 weights never use -128
PER_TENSOR = (keras.layers.Dense,)  # the converter gives FULLY_CONNECTED one weight scale (TF 2.16)
WEIGHT_SCHEME = {t.__name__: "int8 symmetric narrow range, scale max|w|/127 "
                 + ("per tensor" if t in PER_TENSOR else "per output channel") for t in WEIGHTED}
MAX_ROUNDS = 50  # equalization sweeps over all pairs at most
CONVERGED = 1e-4  # a sweep whose scales all lie within 1 +- this ends the iteration
# Layers a positive per-channel scale passes through unchanged (f(x / s) = f(x) / s).
PASS_THROUGH = (keras.layers.MaxPooling2D, keras.layers.Dropout, keras.layers.ZeroPadding2D)
HOMOGENEOUS = ("linear", "relu")  # activation functions (by name) that are positively homogeneous


def _weighted(layer) -> bool:
    """Exactly a Conv2D, DepthwiseConv2D or Dense (Conv2DTranspose subclasses Conv2D: not it)."""
    return type(layer) in WEIGHTED and getattr(layer, "data_format", "channels_last") == "channels_last"


def _kernel(layer) -> np.ndarray:
    return (layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel).numpy()


def _set_kernel(layer, kernel: np.ndarray) -> None:
    var = layer.depthwise_kernel if isinstance(layer, keras.layers.DepthwiseConv2D) else layer.kernel
    var.assign(kernel.astype(var.dtype.as_numpy_dtype))


def out_columns(layer, kernel: np.ndarray) -> np.ndarray:
    """The kernel as [weights per output channel, output channels]: Conv2D [kh, kw, in, out]
    and Dense [in, out] by their last axis; DepthwiseConv2D [kh, kw, in, mult] by output
    channel in * mult + m, the order TensorFlow and TFLite give its outputs."""
    channels = kernel.shape[-2] * kernel.shape[-1] if isinstance(layer, keras.layers.DepthwiseConv2D) \
        else kernel.shape[-1]
    return kernel.reshape(-1, channels)


def quantize_weights(layer, kernel: np.ndarray) -> np.ndarray:
    """`kernel` quantized as the converter quantizes the layer's weights for the int8 variants,
    returned in float (dequantized), same shape: int8 symmetric narrow range, scale =
    max|w| / 127 per output channel (Conv2D, DepthwiseConv2D) or per tensor (Dense); zeros stay
    zero."""
    columns = out_columns(layer, kernel).astype(np.float64)
    scale = np.abs(columns).max(axis=0) / INT8_MAX
    if type(layer) in PER_TENSOR:
        scale = np.full_like(scale, scale.max() if scale.size else 0.0)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.round(columns / safe), -INT8_MAX, INT8_MAX) * safe
    return np.where(scale > 0, q, 0.0).reshape(kernel.shape).astype(kernel.dtype)


def _single_consumer(model: keras.Model, layer):
    """The one layer reading `layer`'s output, or None: a layer used at several places, whose
    output has several readers or is a model output."""
    if len(layer._inbound_nodes) != 1 or len(layer._outbound_nodes) != 1:  # pylint: disable=protected-access
        return None
    if any(layer.output is o for o in model.outputs):
        return None
    return layer._outbound_nodes[0].outbound_layer  # pylint: disable=protected-access


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _batch_norm_after(model: keras.Model, layer) -> Optional[keras.layers.BatchNormalization]:
    """The batch normalization folded into `layer` (the converter folds it): the single
    reader of a layer without activation, normalizing the last axis, with gamma and beta."""
    nxt = _single_consumer(model, layer)
    if (isinstance(nxt, keras.layers.BatchNormalization) and _activation_name(layer.activation) == "linear"
            and list(nxt.axis) in ([-1], [len(layer.output.shape) - 1]) and nxt.scale and nxt.center
            and len(nxt._inbound_nodes) == 1):  # pylint: disable=protected-access
        return nxt
    return None


def _bn_factor(bn) -> np.ndarray:
    """gamma / sqrt(moving variance + epsilon): what folding multiplies the kernel's output channels by."""
    return bn.gamma.numpy().astype(np.float64) / np.sqrt(bn.moving_variance.numpy().astype(np.float64) + bn.epsilon)


class _Pair:
    """producer -> [batch norm] -> homogeneous layers -> consumer; `tiles`: how many times the
    producer's channels repeat along the consumer's input (a Flatten of H x W positions)."""

    def __init__(self, producer, bn, through: List[str], consumer, tiles: int):
        self.producer, self.bn, self.through, self.consumer, self.tiles = producer, bn, through, consumer, tiles

    def producer_ranges(self) -> np.ndarray:
        r = np.abs(out_columns(self.producer, _kernel(self.producer))).max(axis=0).astype(np.float64)
        return r * np.abs(_bn_factor(self.bn)) if self.bn is not None else r

    def consumer_ranges(self) -> np.ndarray:
        k = np.abs(_kernel(self.consumer)).astype(np.float64)
        if isinstance(self.consumer, keras.layers.Dense):
            per_row = k.max(axis=1)  # [in]
            return per_row.reshape(self.tiles, -1).max(axis=0)
        return k.max(axis=(0, 1, 3))  # [kh, kw, in, out or mult]

    def scale(self, s: np.ndarray) -> None:
        """Divides the producer's output channels by s and multiplies the consumer's input channels by s."""
        if self.bn is not None:
            self.bn.gamma.assign((self.bn.gamma.numpy() / s).astype(np.float32))
            self.bn.beta.assign((self.bn.beta.numpy() / s).astype(np.float32))
        else:
            k = _kernel(self.producer)
            _set_kernel(self.producer, (out_columns(self.producer, k) / s[None, :]).reshape(k.shape))
            if self.producer.use_bias:
                self.producer.bias.assign((self.producer.bias.numpy() / s).astype(np.float32))
        k = _kernel(self.consumer)
        if isinstance(self.consumer, keras.layers.Dense):
            _set_kernel(self.consumer, k * np.tile(s, self.tiles)[:, None])
        else:
            _set_kernel(self.consumer, k * s[None, None, :, None])


def _pair_from(model: keras.Model, producer) -> Tuple[Optional[_Pair], Optional[SkippedPair]]:
    """The equalizable pair starting at `producer`, or why there is none (None, None when its
    output reaches no weighted layer through a chain: nothing to record)."""
    bn = _batch_norm_after(model, producer)
    through: List[str] = [bn.name] if bn is not None else []
    act = _activation_name(producer.activation)
    layer = _single_consumer(model, bn if bn is not None else producer)
    tiles, blocked = 1, ""
    if act not in HOMOGENEOUS:
        blocked = f"activation {act} of {producer.name} is not positively homogeneous"
    while layer is not None and not _weighted(layer):
        if isinstance(layer, keras.layers.ReLU):
            config = layer.get_config()
            if config.get("max_value") is not None:
                blocked = blocked or (f"{layer.name} is ReLU6 (max_value {config['max_value']}): relu6(x/s)*s != "
                                      "relu6(x), so equalizing through it would change the float model")
            elif config.get("negative_slope") or config.get("threshold"):
                blocked = blocked or f"{layer.name} is a leaky or thresholded ReLU: not positively homogeneous"
        elif isinstance(layer, keras.layers.Activation):
            name = _activation_name(layer.activation)
            if name not in HOMOGENEOUS:
                blocked = blocked or (f"{layer.name} applies {name}" + (
                    ": relu6(x/s)*s != relu6(x), so equalizing through it would change the float model"
                    if name == "relu6" else ": not positively homogeneous"))
        elif isinstance(layer, keras.layers.Flatten):
            shape = layer.input.shape
            if len(shape) != 4:
                return None, None
            tiles = int(shape[1]) * int(shape[2])
        elif not isinstance(layer, PASS_THROUGH):
            return None, None  # an add, a concatenation, a reshape...: no one-to-one channel chain
        through.append(layer.name)
        layer = _single_consumer(model, layer)
    if layer is None:
        return None, None
    consumer = layer
    if tiles > 1 and not isinstance(consumer, keras.layers.Dense):
        return None, None
    if isinstance(consumer, keras.layers.Conv2D) and consumer.groups != 1:
        blocked = blocked or f"{consumer.name} is a grouped convolution"
    if blocked:
        return None, SkippedPair(producer=producer.name, consumer=consumer.name, reason=blocked)
    return _Pair(producer, bn, through, consumer, tiles), None


def _ratio(r: np.ndarray) -> float:
    """Smallest over largest per-channel range: 1 when every channel spans the same range."""
    top = float(r.max()) if r.size else 0.0
    return float(r.min()) / top if top > 0 else 1.0


def equalize(model: keras.Model) -> Tuple[List[EqualizedPair], List[SkippedPair], int]:
    """Cross-layer equalization of `model` in place (module docstring). Returns the pairs
    equalized (their per-channel range ratio min/max before and after, for the producer's
    output channels and the consumer's input channels), the pairs skipped with the reason,
    and the number of sweeps until the scales converged (at most MAX_ROUNDS)."""
    pairs: List[_Pair] = []
    skipped: List[SkippedPair] = []
    for layer in model.layers:
        if not _weighted(layer):
            continue
        pair, skip = _pair_from(model, layer)
        if pair is not None:
            pairs.append(pair)
        elif skip is not None:
            skipped.append(skip)
    before = [(_ratio(p.producer_ranges()), _ratio(p.consumer_ranges())) for p in pairs]
    rounds = 0
    for rounds in range(1, MAX_ROUNDS + 1):
        largest = 0.0
        for p in pairs:
            r1, r2 = p.producer_ranges(), p.consumer_ranges()
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 * r2) / np.where(r2 > 0, r2, 1.0), 1.0)
            p.scale(s)
            largest = max(largest, float(np.max(np.abs(s - 1.0))) if s.size else 0.0)
        if largest < CONVERGED:
            break
    records = [EqualizedPair(producer=p.producer.name, consumer=p.consumer.name, through=p.through,
                             producer_range_ratio_before=b[0], producer_range_ratio_after=_ratio(p.producer_ranges()),
                             consumer_range_ratio_before=b[1], consumer_range_ratio_after=_ratio(p.consumer_ranges()))
               for p, b in zip(pairs, before)]
    log.info("Cross-layer equalization: %d pair(s) in %d sweep(s), %d skipped", len(pairs), rounds, len(skipped))
    return records, skipped, rounds


def linear_output(layer, x: tf.Tensor, kernel: np.ndarray) -> tf.Tensor:
    """The layer's output without bias and activation, with `kernel` in place of its own:
    the convolution or matrix product alone ([B, ..., out channels])."""
    k = tf.constant(kernel, dtype=x.dtype)
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return keras.backend.depthwise_conv2d(x, k, strides=layer.strides, padding=layer.padding,
                                              dilation_rate=layer.dilation_rate, data_format=layer.data_format)
    if isinstance(layer, keras.layers.Conv2D):
        return layer.convolution_op(x, k)
    return tf.tensordot(x, k, axes=[[x.shape.rank - 1], [0]])


def _input_fn(model: keras.Model, layer) -> Callable:
    """model inputs -> the layer's input."""
    if any(layer.input is i for i in model.inputs):
        return lambda x: tf.convert_to_tensor(x[layer.input.name.split(":")[0]] if isinstance(x, dict) else x)
    sub = keras.Model(model.inputs, layer.input)
    return lambda x: sub(x, training=False)


def correct_biases(model: keras.Model, batches: Iterable) -> Tuple[List[CorrectedLayer], Dict[str, str]]:
    """Empirical bias correction of `model` in place (module docstring), layer by layer in
    graph order. `batches`: the calibration sample as the Keras model takes it (arrays
    [B, ...], or dicts by Keras input name), iterable more than once. Returns each corrected
    layer's record (the per-channel mean output error removed: its mean and largest absolute
    value, in the layer's output units) and {layer: why it was left alone}."""
    batches = list(batches)
    if not batches:
        raise ValueError("bias correction needs calibration data: none was given")
    reference = keras.models.clone_model(model)  # the float model as given: the outputs to match
    reference.set_weights(model.get_weights())
    shadow = keras.models.clone_model(model)  # the model with quantized, corrected weights
    shadow.set_weights(model.get_weights())
    corrected: List[CorrectedLayer] = []
    skipped: Dict[str, str] = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        if not _weighted(layer):
            if type(layer).__name__ in ("Conv1D", "Conv3D", "Conv2DTranspose", "SeparableConv2D", "Conv1DTranspose",
                                        "Conv3DTranspose", "SeparableConv1D"):
                skipped[layer.name] = f"{type(layer).__name__} is not handled (Conv2D, DepthwiseConv2D, Dense are)"
            continue
        if len(layer._inbound_nodes) != 1:  # pylint: disable=protected-access
            skipped[layer.name] = "the layer is used at more than one place"
            continue
        bn = _batch_norm_after(model, layer)
        factor = _bn_factor(bn) if bn is not None else None
        if factor is not None and np.any(factor == 0):
            skipped[layer.name] = f"batch norm {bn.name} has a zero gamma: the folded kernel cannot be recovered"
            continue
        if bn is None and not layer.use_bias:
            skipped[layer.name] = "no bias to correct (use_bias=False and no batch normalization after it)"
            continue
        kernel = _kernel(layer)
        columns = out_columns(layer, kernel).astype(np.float64)
        folded = (columns * factor[None, :] if factor is not None else columns).reshape(kernel.shape)
        folded_q = quantize_weights(layer, folded)
        twin = shadow.get_layer(layer.name)
        unfolded_q = out_columns(layer, folded_q) / (factor[None, :] if factor is not None else 1.0)
        _set_kernel(twin, unfolded_q.reshape(kernel.shape))
        float_in, quant_in = _input_fn(reference, reference.get_layer(layer.name)), _input_fn(shadow, twin)
        total, count = 0.0, 0
        for x in batches:
            error = (linear_output(layer, quant_in(x), folded_q.astype(np.float32))
                     - linear_output(layer, float_in(x), folded.astype(np.float32))).numpy().astype(np.float64)
            error = error.reshape(-1, error.shape[-1])
            total = total + error.sum(axis=0)
            count += error.shape[0]
        shift = total / count
        for target in (model, shadow):
            owner = target.get_layer(bn.name if bn is not None else layer.name)
            var = owner.beta if bn is not None else owner.bias
            var.assign((var.numpy().astype(np.float64) - shift).astype(np.float32))
        corrected.append(CorrectedLayer(layer=layer.name, folded_batch_norm=bn.name if bn is not None else None,
                                        channels=int(shift.size), mean_abs_error=float(np.mean(np.abs(shift))),
                                        max_abs_error=float(np.max(np.abs(shift)))))
    log.info("Bias correction: %d layer(s) corrected, %d skipped", len(corrected), len(skipped))
    return corrected, skipped


def output_change(before: Callable, after: Callable, batches: Iterable) -> float:
    """The largest absolute difference between two models' outputs on `batches`, relative to
    the largest absolute output (0 when they agree)."""
    worst, top = 0.0, 0.0
    for x in batches:
        a, b = np.asarray(before(x)), np.asarray(after(x))
        worst = max(worst, float(np.max(np.abs(a - b))))
        top = max(top, float(np.max(np.abs(a))))
    return worst / top if top > 0 else worst
