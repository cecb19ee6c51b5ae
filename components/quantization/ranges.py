"""Activation ranges by method, chosen per model on the validation split (issue #31).

TFLite's calibrator records one global min/max per activation tensor over the calibration
sample; one outlier widens a range for every other value. This module collects the
activation statistics ONCE per model and derives each method's range from them:

  minmax           the calibrator's own min/max (the reference; TFLite's default).
  moving_average   an exponential moving average of the per-sample min and max, smoothing
                   0.95, started at the first sample's: LiteRT Quantizer's moving-average
                   calibration (ai_edge_quantizer/utils/calibration_utils.py,
                   moving_average_update). One calibration sample is one step.
  percentile       the threshold T holding `percentile` % of the |x| histogram (NVIDIA
                   pytorch-quantization's HistogramCalibrator 'percentile'; ONNX Runtime's
                   percentile calibration): the right edge of the first bin where the
                   cumulative share reaches percentile / 100.
  mse              the threshold T, among histogram bin edges, minimizing the squared error
                   of the bin centres fake-quantized with that threshold, weighted by the bin
                   counts (pytorch-quantization's _compute_amax_mse).
  kl               TensorRT's entropy calibration (Migacz, "8-bit Inference with TensorRT",
                   GTC 2017; pytorch-quantization's _compute_amax_entropy): for each threshold
                   T = edge i, the reference P is the first i bins with the clipped tail added
                   to the last; Q merges those i bins into `levels` groups and spreads each
                   group's count evenly over its non-empty bins; an empty bin of Q where P
                   has mass (the clipped tail) takes KL_EPSILON, as ONNX Runtime smooths
                   (TensorRT's KL is infinite there); T minimizes KL(P || Q)
                   (scipy.stats.entropy), the largest such T on ties. The zero bin takes its
                   neighbour's count first (as pytorch-quantization does), so a ReLU's spike
                   at 0 does not decide the threshold.
  mse and kl try the bin edges from START_BIN on, at most MAX_CANDIDATES of them (log-spaced
  when there are more), to bound their cost on a model with many tensors.

The histogram is of |x| over [0, amax] (amax = max(|min|, |max|) of the calibrator's range),
HISTOGRAM_BINS bins (TensorRT uses 2048; more bins keep the values far below a rare large
outlier in more than a few bins, so a threshold near them can be found). A threshold T
becomes the range (max(min, -T), min(max, T)): a non-negative tensor (a ReLU output: min >= 0)
gets (min, T) and all 256 int8 levels on [0, T] (`levels` 256, fake-quantized with step
T / 255); a signed one is treated as symmetric (`levels` 128, step T / 127), as TensorRT does.

The ranges are written into the converter's calibrated model (the float .tflite holding each
tensor's recorded min/max, produced by `_experimental_calibrate_only`), which is then
quantized by `tf.lite.python.convert.mlir_quantize`: the route TFLite's QuantizationDebugger
takes (tensorflow/lite/tools/optimize/debugging/python/debugger.py, TF 2.16). Both are
private TensorFlow APIs, pinned by tests/test_ranges.py. The model's inputs keep the
calibrator's range (their range is the data's, which the mixed-scale workload is about).

Which variants take the ranges is one field of their recipe (variants.VariantRecipe.activations):
full_integer, integer_only and selective_integer (whose search starts from the chosen ranges)
share one sweep measured with int8 activations; int16x8 has its own, measured with 16-bit
activations (mse and kl for 2^15 levels, symmetric as TFLite's 16x8 kernels require) and
quantized by quantize_16x8, TF 2.16's converter's own 16x8 quantizer. qat_int8 takes none: its
ranges were learned in training (its recipe says so, the manifest's sweep repeats it).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as _scipy_stats

from tfx_quantization.contracts import (
    CALIBRATION_METHODS, KL, MINMAX, MOVING_AVERAGE, MSE, PERCENTILE, RangeMethodResult, RangeSweep,
)

log = logging.getLogger(__name__)

HISTOGRAM_BINS = 1 << 15  # 16x TensorRT's 2048: values far below one large outlier still fall in many bins
START_BIN = 128  # the smallest threshold tried by mse and kl, in bins (pytorch-quantization's default)
MAX_CANDIDATES = 192  # thresholds mse and kl try at most: every bin edge up to this many, else log-spaced ones
KL_EPSILON = 1e-4  # kl: the count an empty bin of Q takes where P has mass (ONNX Runtime's smoothing)
SMOOTHING = 0.95  # moving_average: LiteRT Quantizer's default smoothing factor
CHANGED = 1e-6  # a range counts as changed when an end moves by more than this share of its width
Range = Tuple[float, float]


# ---- statistics ---------------------------------------------------------------------------
@dataclasses.dataclass
class TensorStats:
    """One activation tensor's statistics over the calibration sample.

    index: the tensor's index in subgraph 0 of the calibrated model; low, high: the
    calibrator's min/max (float32 units of the tensor); counts: int64 [bins], the histogram of
    |x| over [0, amax]; sample_min, sample_max: float64 [samples], each sample's extremes.
    """

    index: int
    name: str
    low: float
    high: float
    counts: np.ndarray
    sample_min: np.ndarray
    sample_max: np.ndarray

    @property
    def amax(self) -> float:
        return max(abs(self.low), abs(self.high))

    @property
    def edges(self) -> np.ndarray:
        """float64 [bins + 1], the histogram's bin edges on [0, amax]."""
        return np.linspace(0.0, self.amax, len(self.counts) + 1)

    @property
    def unsigned(self) -> bool:
        return self.low >= 0


def _flatbuffer_utils():
    from tensorflow.lite.tools import flatbuffer_utils  # a public-in-source, private-in-API module

    return flatbuffer_utils


def read_ranges(model: bytes) -> Dict[int, Range]:
    """{tensor index: (min, max)} of every tensor of subgraph 0 holding one recorded range
    (a calibrated model's activations; constants and the model's inputs left out)."""
    obj = _flatbuffer_utils().convert_bytearray_to_object(bytearray(model))
    graph = obj.subgraphs[0]
    inputs = set(int(i) for i in graph.inputs)
    ranges = {}
    for index, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1 or len(q.max) != 1 or index in inputs:
            continue
        buffer = obj.buffers[tensor.buffer] if tensor.buffer < len(obj.buffers) else None
        if buffer is not None and buffer.data is not None and len(buffer.data):
            continue  # a constant
        ranges[index] = (float(q.min[0]), float(q.max[0]))
    return ranges


def write_ranges(model: bytes, ranges: Dict[int, Range]) -> bytes:
    """The calibrated model with the recorded (min, max) of the tensors in `ranges` replaced
    (tensor index in subgraph 0 -> (min, max), float32 units). A ValueError names a tensor
    that holds no recorded range or a range with min > max."""
    utils = _flatbuffer_utils()
    obj = utils.convert_bytearray_to_object(bytearray(model))
    tensors = obj.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        q = tensors[index].quantization if 0 <= index < len(tensors) else None
        if q is None or q.min is None or len(q.min) != 1:
            raise ValueError(f"tensor {index} holds no recorded range: pass the calibrated model's activations "
                             "(read_ranges)")
        if not low <= high:
            raise ValueError(f"tensor {index}: range ({low}, {high}) has min > max")
        q.min = np.array([low], np.float32)
        q.max = np.array([high], np.float32)
    return utils.convert_object_to_bytearray(obj)


def collect(calibrated: bytes, calibration: Callable, bins: int = HISTOGRAM_BINS) -> List[TensorStats]:
    """Statistics of every recorded activation of the calibrated model (read_ranges) over the
    calibration sample, in one pass: the float model is run on each sample with all tensors
    preserved (no delegate), and |x| is counted into `bins` bins on [0, amax] of the
    calibrator's range (values beyond it, which the calibrator's own pass cannot produce,
    fall in the last bin)."""
    from tfx_quantization.quantization.interpreter import TFLiteRunner

    ranges = read_ranges(calibrated)
    if not ranges:
        raise ValueError("the calibrated model records no activation range: calibrate it first "
                         "(selective.calibrate)")
    runner = TFLiteRunner(calibrated, use_xnnpack=False, preserve_all_tensors=True)
    names = {d["index"]: d["name"] for d in runner.interpreter.get_tensor_details()}
    counts = {i: np.zeros(bins, np.int64) for i in ranges}
    lows: Dict[int, List[float]] = {i: [] for i in ranges}
    highs: Dict[int, List[float]] = {i: [] for i in ranges}
    amax = {i: max(abs(lo), abs(hi)) for i, (lo, hi) in ranges.items()}
    for sample in calibration():
        runner.predict(sample)
        for i in ranges:
            x = np.asarray(runner.interpreter.get_tensor(i), np.float64).ravel()
            if not x.size:
                continue
            lows[i].append(float(x.min()))
            highs[i].append(float(x.max()))
            scaled = np.abs(x) * (bins / amax[i]) if amax[i] > 0 else np.zeros_like(x)
            counts[i] += np.bincount(np.minimum(scaled.astype(np.int64), bins - 1), minlength=bins)
    return [TensorStats(index=i, name=names.get(i, str(i)), low=lo, high=hi, counts=counts[i],
                        sample_min=np.asarray(lows[i]), sample_max=np.asarray(highs[i]))
            for i, (lo, hi) in sorted(ranges.items())]


# ---- the methods: pure functions of a histogram -------------------------------------------
ACTIVATION_BITS = {"int8": 8, "int16": 16}  # VariantRecipe.activations -> bits


def _levels(unsigned: bool, activations: str = "int8") -> int:
    """Quantization levels on [0, T]: int8 (asymmetric) 256 for a non-negative tensor, 128 for a
    signed one; int16 (symmetric, zero point 0, as TFLite's 16x8 kernels require) 32768 for both."""
    if activations == "int16":
        return 1 << 15
    return 256 if unsigned else 128


def percentile_threshold(counts: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    """The right edge of the first bin at which the cumulative share of `counts` reaches
    percentile / 100 (0 < percentile <= 100)."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile {percentile} is outside (0, 100]")
    cdf = np.cumsum(counts) / max(np.sum(counts), 1)
    index = int(np.searchsorted(cdf, percentile / 100.0 - 1e-12))
    return float(edges[min(index, len(counts) - 1) + 1])


def _candidates(first: int, last: int) -> np.ndarray:
    """The bin indices first..last (inclusive) a threshold search tries: all of them up to
    MAX_CANDIDATES, else MAX_CANDIDATES log-spaced ones (as many small thresholds as large),
    the first and last included."""
    if last - first + 1 <= MAX_CANDIDATES:
        return np.arange(first, last + 1)
    return np.unique(np.round(np.geomspace(first, last, MAX_CANDIDATES)).astype(np.int64))


def mse_threshold(counts: np.ndarray, edges: np.ndarray, levels: int, start_bin: int = START_BIN) -> float:
    """Among the thresholds T = edges[i], i = start_bin..bins (_candidates), the one minimizing
    sum_j counts[j] * (q_T(c_j) - c_j)^2 over the bin centres c_j, where q_T rounds to the grid
    of step T / (levels - 1) and clips at T (the first such T on ties)."""
    centres = (edges[1:] + edges[:-1]) / 2
    thresholds = edges[_candidates(min(max(start_bin, 1), len(counts)), len(counts))]
    steps = thresholds / (levels - 1)
    q = np.minimum(np.round(centres[None, :] / steps[:, None]), levels - 1) * steps[:, None]
    errors = ((q - centres[None, :]) ** 2 * counts[None, :]).sum(axis=1)
    return float(thresholds[int(np.argmin(errors))])


def kl_threshold(counts: np.ndarray, edges: np.ndarray, levels: int, start_bin: int = START_BIN) -> float:
    """TensorRT's entropy threshold (module docstring): edges[i] for the i in
    max(start_bin, levels)..bins (_candidates) minimizing KL(P_i || Q_i); the largest i on ties."""
    bins = np.asarray(counts, np.float64).copy()
    if len(bins) > 1:
        bins[0] = bins[1]
    first = min(max(start_bin, levels), len(bins))
    best, best_i = np.inf, len(bins)
    for i in _candidates(first, len(bins)):
        i = int(i)
        p = bins[:i]
        nonzero = p > 0
        group = (np.arange(i) * levels) // i
        totals = np.bincount(group, weights=p, minlength=levels)
        filled = np.bincount(group, weights=nonzero, minlength=levels)
        q = np.where(nonzero, totals[group] / np.maximum(filled[group], 1), 0.0)
        reference = p.copy()
        reference[-1] += bins[i:].sum()
        q = np.where((q == 0) & (reference > 0), KL_EPSILON, q)
        if reference.sum() <= 0 or q.sum() <= 0:
            continue
        divergence = float(_scipy_stats.entropy(reference, q))
        if divergence <= best:
            best, best_i = divergence, i
    return float(edges[best_i])


def moving_average_range(sample_min: np.ndarray, sample_max: np.ndarray, smoothing: float = SMOOTHING) -> Range:
    """(min, max): each an exponential moving average over the samples in order,
    m <- smoothing * m + (1 - smoothing) * sample's, started at the first sample's."""
    if not len(sample_min):
        raise ValueError("no samples: the moving average needs at least one")
    low, high = float(sample_min[0]), float(sample_max[0])
    for lo, hi in zip(sample_min[1:], sample_max[1:]):
        low = smoothing * low + (1 - smoothing) * float(lo)
        high = smoothing * high + (1 - smoothing) * float(hi)
    return low, high


def clip_range(s: TensorStats, threshold: float) -> Range:
    """The range a threshold on |x| gives: (max(min, -T), min(max, T))."""
    return max(s.low, -threshold), min(s.high, threshold)


def method_range(s: TensorStats, method: str, percentile: float = 99.99, activations: str = "int8") -> Range:
    """One tensor's (min, max) under `method` (CALIBRATION_METHODS), for `activations` of that
    type ("int8", "int16": the levels mse and kl quantize to)."""
    if method == MINMAX or s.amax <= 0:
        return s.low, s.high
    if method == MOVING_AVERAGE:
        low, high = moving_average_range(s.sample_min, s.sample_max)
        return min(low, high), max(low, high)
    if method == PERCENTILE:
        return clip_range(s, percentile_threshold(s.counts, s.edges, percentile))
    if method == MSE:
        return clip_range(s, mse_threshold(s.counts, s.edges, _levels(s.unsigned, activations)))
    if method == KL:
        return clip_range(s, kl_threshold(s.counts, s.edges, _levels(s.unsigned, activations)))
    raise ValueError(f"unknown calibration method {method!r}: use one of {list(CALIBRATION_METHODS)}")


def ranges_for(stats: Sequence[TensorStats], method: str, percentile: float = 99.99,
               activations: str = "int8") -> Dict[int, Range]:
    """{tensor index: (min, max)} of every tensor under `method` (method_range)."""
    return {s.index: method_range(s, method, percentile, activations) for s in stats}


def changed(stats: Sequence[TensorStats], ranges: Dict[int, Range]) -> List[float]:
    """The width ratio (new / min-max) of each tensor whose range `ranges` moved (CHANGED)."""
    ratios = []
    for s in stats:
        low, high = ranges[s.index]
        width = s.high - s.low
        if width > 0 and max(abs(low - s.low), abs(high - s.high)) > CHANGED * width:
            ratios.append((high - low) / width)
    return ratios


# ---- the sweep ----------------------------------------------------------------------------
def _paired_gain(reference_right: np.ndarray, right: np.ndarray, confidence: float):
    """stats.paired_drop of min/max (reference) against a method on the same examples."""
    from tfx_quantization.quantization import stats

    a = int(np.sum(reference_right & right))
    b = int(np.sum(reference_right & ~right))
    c = int(np.sum(~reference_right & right))
    d = int(np.sum(~reference_right & ~right))
    return stats.paired_drop([a, b, c, d], 2 * confidence - 1)


def sweep(
    calibrated: bytes,
    calibration: Callable,
    quantize: Callable[[bytes], bytes],
    predict: Callable[[bytes], np.ndarray],
    y_val: np.ndarray,
    float_accuracy: float,
    methods: Sequence[str],
    percentile: float = 99.99,
    confidence: float = 0.95,
    stats: Optional[List[TensorStats]] = None,
    activations: str = "int8",
) -> Tuple[Optional[bytes], RangeSweep]:
    """(calibrated model holding the chosen method's ranges, or None when min/max stays; the
    record). Each method's model is `quantize(calibrated with its ranges)`, its validation
    predictions `predict(model)` (class scores [n, classes]) against `y_val` (int [n]).
    stats: collect(calibrated, calibration), when the caller has it; activations: the
    activation type `quantize` makes ("int8", "int16"), which the mse and kl ranges are for.

    A method replaces min/max only when it is better on the validation split beyond chance:
    the upper end of the paired interval of min/max's accuracy minus the method's
    (stats.paired_drop, Newcombe; one-sided `confidence`, as the gate decides) is below 0.
    Among such methods the most accurate one on validation wins (the earlier in `methods` on
    ties). A method whose conversion fails is recorded with its reason and skipped."""
    started = time.perf_counter()
    stats = collect(calibrated, calibration) if stats is None else stats
    reference_right = np.argmax(predict(quantize(calibrated)), axis=-1) == y_val
    results = [RangeMethodResult(method=MINMAX, validation_accuracy=float(np.mean(reference_right)),
                                 gain_over_minmax=0.0, tensors_changed=0)]
    models: Dict[str, bytes] = {}
    for method in [m for m in dict.fromkeys(methods) if m != MINMAX]:
        try:
            ranges = ranges_for(stats, method, percentile, activations)
            model = write_ranges(calibrated, ranges)
            right = np.argmax(predict(quantize(model)), axis=-1) == y_val
        except Exception as e:  # noqa: BLE001 - one method failing leaves the others
            log.warning("activation ranges %s failed: %s", method, e)
            results.append(RangeMethodResult(method=method, error=f"{type(e).__name__}: {str(e)[:300]}"))
            continue
        ratios = changed(stats, ranges)
        drop = _paired_gain(reference_right, right, confidence)
        results.append(RangeMethodResult(
            method=method, validation_accuracy=float(np.mean(right)), gain_over_minmax=-drop.drop,
            gain_low=-drop.high, gain_high=-drop.low, tensors_changed=len(ratios),
            median_width_ratio=float(np.median(ratios)) if ratios else None))
        models[method] = model
        log.info("activation ranges %s: validation accuracy %.4f (min/max %.4f), %d range(s) changed",
                 method, np.mean(right), np.mean(reference_right), len(ratios))
    better = [r for r in results if r.method in models and r.gain_low is not None and r.gain_low > 0]
    chosen = max(better, key=lambda r: r.validation_accuracy) if better else results[0]
    if better:
        why = (f"{chosen.method} beats min/max on validation by {100 * chosen.gain_over_minmax:.2f} pp (interval "
               f"[{100 * chosen.gain_low:+.2f}, {100 * chosen.gain_high:+.2f}] pp at {confidence:g} one-sided)")
    else:
        why = "no method beats min/max on validation beyond chance (the lower end of its paired gain interval is <= 0)"
    record = RangeSweep(
        methods=results, chosen=chosen.method, why=why, percentile=percentile, confidence=confidence,
        activations=activations,
        num_validation_examples=int(len(y_val)), float_accuracy_on_validation=float(float_accuracy),
        num_tensors=len(stats), applied_to=[], not_applied={}, seconds=round(time.perf_counter() - started, 2))
    return models.get(chosen.method), record


# ---- what the quantizer calls -------------------------------------------------------------
def prepare(saved_model_dir: str, calibration: Callable, spec) -> Tuple[bytes, List[TensorStats]]:
    """(the SavedModel calibrated once through the converter: selective.calibrate, the
    calibrate-only route; its activations' statistics: collect). One per source model, shared
    by the sweeps of every activation type."""
    from tfx_quantization.quantization import selective

    calibrated, _ = selective.calibrate(saved_model_dir, calibration, spec.signature)
    return calibrated, collect(calibrated, calibration)


def sweep_model(prepared: Tuple[bytes, List[TensorStats]], calibration: Callable, x_val, y_val: np.ndarray,
                float_accuracy: float, settings, spec, activations: str = "int8") -> Tuple[Optional[bytes], RangeSweep]:
    """The sweep (above) for one calibrated model and its statistics (prepare), each method's
    model quantized with float I/O and `activations` ("int8": mlir_quantize; "int16":
    quantize_16x8) and run on the validation inputs x_val ({input name: [n, ...]}) through the
    spec's signature and class scores. settings: the QuantizeSettings (calibration_methods,
    calibration_percentile, calibration_confidence)."""
    from tfx_quantization.quantization.interpreter import TFLiteRunner

    if activations not in ACTIVATION_BITS:
        raise ValueError(f"activations {activations!r}: the sweep quantizes to one of {list(ACTIVATION_BITS)}")
    calibrated, stats = prepared
    return sweep(
        calibrated, calibration, quantize=lambda model: build_variant(model, None, activations),
        predict=lambda content: spec.scores(TFLiteRunner.for_spec(content, spec).predict(x_val)),
        y_val=y_val, float_accuracy=float_accuracy, methods=settings.calibration_methods,
        percentile=settings.calibration_percentile, confidence=settings.calibration_confidence, stats=stats,
        activations=activations)


def quantize_16x8(calibrated: bytes) -> bytes:
    """16-bit activations, 8-bit weights, float input and output, from a calibrated model: the
    ranges it records quantized as TF 2.16's converter quantizes a 16x8 model (lite.py
    _quantize: the calibrator's QuantizeModel, the pre-MLIR quantizer, with int16 activations
    and int64 biases, no float fallback). Nothing is fed to the calibrator, so the ranges in
    the model stand. mlir_quantize cannot take this role in TF 2.16: with 16-bit activations it
    gives the input a zero point of -1, which the int16 kernels refuse ("conv.cc:399
    input->params.zero_point != 0"). A private API (tensorflow.lite.python.optimize.calibrator),
    pinned by tests/test_ranges.py."""
    import tensorflow as tf
    from tensorflow.lite.python.optimize import calibrator  # pylint: disable=import-outside-toplevel

    from tfx_quantization.quantization.convert import quiet_native_output

    with quiet_native_output():
        return calibrator.Calibrator(calibrated).calibrate_and_quantize(
            lambda: iter(()), tf.float32, tf.float32, False, activations_type=tf.int16, bias_type=tf.int64)


def build_variant(ranged: bytes, io_type: Optional[str], activations: str = "int8") -> bytes:
    """An integer variant from the calibrated model holding the chosen ranges, quantized as the
    converter quantizes it: int8 activations through mlir_quantize, with integer input and
    output of io_type ("int8", "uint8"; float ones when it is None); int16 ones through
    quantize_16x8 (float input and output only)."""
    from tfx_quantization.quantization import selective

    if activations == "int16":
        if io_type is not None:
            raise ValueError(f"16-bit activations take float input and output, not {io_type}")
        return quantize_16x8(ranged)
    return selective.quantize_calibrated(ranged, [], io_type)
