"""TFLite variants: the converter configured from a variant's recipe (variants.py),
conversion, description and validation.

No TFX imports: the PostTrainingQuantizer executor, the evaluator and the benchmarks all
describe and convert models through this module.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Callable, Dict, Iterable, List, Optional, Tuple, TypeVar

import numpy as np
import tensorflow as tf

# The variant names are a cross-stage contract; the library re-exports them as its vocabulary.
from tfx_quantization.contracts import (  # noqa: F401
    ALL_VARIANTS, DYNAMIC_RANGE, FLOAT16, FLOAT32, FULL_INTEGER, INT16X8, INTEGER_ONLY, QAT_INT8, QAT_MIXED,
    SELECTIVE_INTEGER,
    VARIANTS, ConverterSettings,
)
from tfx_quantization.quantization import variants
from tfx_quantization.quantization.interpreter import TFLiteRunner, four_bit_tensors, quiet_native_output  # noqa: F401

log = logging.getLogger(__name__)

RepresentativeDataset = Callable[[], Iterable[List[np.ndarray]]]


def fixed_batch_converter(saved_model_dir: str, signature: str = "serving_default",
                          batch: int = 1) -> tf.lite.TFLiteConverter:
    """A converter for one signature of a SavedModel traced with a fixed batch size: what
    models needing static shapes convert through (a recurrent layer's tensor list has no
    static element shape under an unknown batch). The .tflite takes [batch, ...] inputs,
    under the same input names; TFLiteRunner feeds it `batch` examples at a time."""
    loaded = tf.saved_model.load(str(saved_model_dir))
    fn = loaded.signatures[signature]
    specs = {name: tf.TensorSpec([batch, *spec.shape[1:]], spec.dtype, name=name)
             for name, spec in fn.structured_input_signature[1].items()}
    traced = tf.function(lambda **inputs: fn(**inputs)).get_concrete_function(**specs)
    return tf.lite.TFLiteConverter.from_concrete_functions([traced], loaded)


def configure(
    settings: ConverterSettings,
    saved_model_dir: str,
    representative_dataset: Optional[RepresentativeDataset] = None,
    signature: str = "serving_default",
    fixed_batch: int = 0,
) -> tf.lite.TFLiteConverter:
    """A TFLite converter for one signature of a SavedModel (traced with a fixed batch size
    when `fixed_batch`), configured as `settings` say (the converter's defaults where they say
    nothing else); the calibration set is attached when the settings take one and it is
    given."""
    converter = (fixed_batch_converter(saved_model_dir, signature, fixed_batch) if fixed_batch else
                 tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[signature]))
    if settings.optimizations:
        converter.optimizations = [getattr(tf.lite.Optimize, o) for o in settings.optimizations]
    if settings.supported_types:
        converter.target_spec.supported_types = [tf.as_dtype(t) for t in settings.supported_types]
    if settings.representative_dataset and representative_dataset is not None:
        converter.representative_dataset = representative_dataset
    if settings.supported_ops != [variants.BUILTINS]:
        converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, o) for o in settings.supported_ops]
    if settings.inference_input_type != "float32":
        converter.inference_input_type = tf.as_dtype(settings.inference_input_type)
    if settings.inference_output_type != "float32":
        converter.inference_output_type = tf.as_dtype(settings.inference_output_type)
    return converter


def convert(
    variant: str,
    saved_model_dir: str,
    representative_dataset: Optional[RepresentativeDataset] = None,
    io_type: str = "int8",
    signature: str = "serving_default",
) -> bytes:
    """Converts one signature of a SavedModel into the given variant; the flatbuffer bytes.
    io_type: the integer input/output type of the integer-I/O variants ("int8" or "uint8").

    When the signature (unknown batch size) does not convert, it is converted again through
    a batch-1 trace (fixed_batch_converter): recurrent layers, and ops that need static
    shapes, convert only so. The first error is raised when that fails too."""
    recipe = variants.recipe(variant)
    if recipe.backend != variants.CONVERTER:
        raise ValueError(f"{variant} is not one converter call: it is built by {recipe.backend}")
    if recipe.needs_calibration and representative_dataset is None:
        raise ValueError(f"{variant} needs calibration data: pass a representative dataset")
    settings = recipe.converter_settings(io_type)
    return with_fixed_batch_retry(
        lambda fixed_batch: configure(settings, saved_model_dir, representative_dataset, signature,
                                      fixed_batch=fixed_batch).convert(), variant)[0]


T = TypeVar("T")


def with_fixed_batch_retry(attempt: Callable[[int], T], what: str) -> Tuple[T, int]:
    """(attempt(0), 0): the signature as exported, with its unknown batch size; when that
    raises, (attempt(1), 1): a batch-1 trace (fixed_batch_converter), which recurrent layers
    and ops needing static shapes convert only through. `attempt(fixed_batch)` configures a
    converter with that `fixed_batch` (configure's argument) and converts. The first error is
    raised when the retry fails too. The one home of this retry: every variant's conversion
    and the selective search's calibration go through it."""
    try:
        with quiet_native_output(failure_level=logging.DEBUG):  # retried below: its dump is not the failure
            return attempt(0), 0
    except Exception as first:  # noqa: BLE001 - retried with static shapes; the first error if that fails
        log.info("%s: the signature with an unknown batch size does not convert (%s); converting a batch-1 trace",
                 what, str(first).strip().splitlines()[0][:200] if str(first).strip() else type(first).__name__)
        try:
            with quiet_native_output():
                return attempt(1), 1
        except Exception:  # noqa: BLE001
            raise first from None


_UNSUPPORTED_OP = re.compile(r"'(tf\.\w+)' op is neither a custom op nor a flex op")
OPS_GUIDE = "https://www.tensorflow.org/lite/guide/ops_compatibility"


def one_line(error: BaseException, limit: int = 400) -> str:
    """`TypeName: first non-empty line of the message`, the line at most `limit` characters."""
    text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {text[:limit]}" if text else type(error).__name__


def failure_reason(error: BaseException) -> str:
    """The converter's reason in one line, with the fix when it is known: the TensorFlow ops
    TFLite has no builtin kernel for (the pipeline never enables SELECT_TF_OPS), named;
    otherwise `ErrorType: first line of the message`."""
    text = str(error)
    ops = sorted(set(_UNSUPPORTED_OP.findall(text)))
    if ops:
        return (f"op(s) {', '.join(ops)} have no TFLite builtin kernel (TensorFlow ops are not enabled): replace them "
                f"with ops TFLite supports ({OPS_GUIDE})")
    return one_line(error, 300)


def _tensor_info(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {
        "name": detail["name"],
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [int(d) for d in detail["shape_signature"]],
        "quantization": {"scale": float(scale), "zero_point": int(zero_point)},
    }


def _interpreter(model_content: bytes) -> tf.lite.Interpreter:
    return tf.lite.Interpreter(
        model_content=model_content,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )


def _ops(interpreter: tf.lite.Interpreter) -> List[tuple]:
    """Each op as (name, input tensor details, output tensor details, whether any is float)."""
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = []
    for op in interpreter._get_ops_details():  # pylint: disable=protected-access
        ins = [tensors[i] for i in op["inputs"] if i in tensors]
        outs = [tensors[i] for i in op["outputs"] if i in tensors]
        is_float = bool({np.dtype(t["dtype"]).name for t in ins + outs} & {"float32", "float16"})
        ops.append((op["op_name"], ins, outs, is_float))
    return ops


def describe(model_content: bytes) -> Dict[str, object]:
    """Inputs, outputs, ops and tensor dtypes of a TFLite flatbuffer. tensor_dtypes counts the
    tensors of subgraph 0 by numpy dtype name, a 4-bit tensor as "int4" / "uint4" (its
    flatbuffer type: interpreter.four_bit_tensors), which the interpreter would call int8."""
    interpreter = _interpreter(model_content)
    ops = _ops(interpreter)
    four_bit = four_bit_tensors(model_content)
    return {
        "inputs": [_tensor_info(d) for d in interpreter.get_input_details()],
        "outputs": [_tensor_info(d) for d in interpreter.get_output_details()],
        "op_counts": dict(sorted(Counter(name for name, *_ in ops).items())),
        "num_ops": len(ops),
        "float_ops": dict(sorted(Counter(name for name, _, _, is_float in ops if is_float).items())),
        "tensor_dtypes": dict(sorted(Counter(four_bit.get(t["index"], np.dtype(t["dtype"]).name)
                                             for t in interpreter.get_tensor_details()).items())),
    }


CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")  # converting between float and integer, not computing


def _op_cost(op_name: str, inputs: List[dict], outputs: List[dict]) -> int:
    """An op's arithmetic: multiply-accumulates for the weighted ops (output elements times
    the products each one sums), output elements for every other op."""
    n_out = sum(int(np.prod(np.maximum(d["shape"], 1))) for d in outputs)
    if op_name in ("CONV_2D", "FULLY_CONNECTED") and len(inputs) > 1:
        return n_out * int(np.prod(inputs[1]["shape"][1:]))  # filter [out, (kh, kw,) in]
    if op_name == "DEPTHWISE_CONV_2D" and len(inputs) > 1:
        return n_out * int(np.prod(inputs[1]["shape"][1:3]))  # filter [1, kh, kw, channels]
    if op_name == "TRANSPOSE_CONV" and len(inputs) > 2:
        return int(np.prod(np.maximum(inputs[2]["shape"], 1))) * int(np.prod(inputs[1]["shape"][1:]))
    if op_name == "BATCH_MATMUL" and inputs:
        return n_out * int(inputs[0]["shape"][-1])
    return max(n_out, 1)


def integer_compute_fraction(model_content: bytes) -> float:
    """The share of the model's arithmetic done by ops with no float input or output: 1.0 for
    an integer model (with float or integer I/O), 0.0 for a float one. Ops are weighted by
    their cost (multiply-accumulates of convolutions and fully-connected layers, elements of
    elementwise ops), so an in-model normalization kept float (two elementwise ops on the
    input) weighs what it computes, not as much as a layer. QUANTIZE/DEQUANTIZE are left
    out: they convert, they compute nothing."""
    total = float_cost = 0
    for name, ins, outs, is_float in _ops(_interpreter(model_content)):
        if name in CONVERSION_OPS:
            continue
        cost = _op_cost(name, ins, outs)
        total += cost
        float_cost += cost if is_float else 0
    return 1.0 - float_cost / total if total > 0 else 0.0


def validate(variant: str, model_content: bytes, example) -> Dict[str, object]:
    """Loads, allocates and runs one example ({input name: [1, ...]} or one [1, ...] array);
    every output (a multi-output model's too, read by signature name) must be finite; an
    integer-only variant may hold no float op.

    Returns the description. Raises ValueError naming what is wrong.
    """
    runner = TFLiteRunner(model_content)
    outputs = runner.predict_outputs(example, list(runner.outputs))
    bad = sorted(name for name, out in outputs.items() if not np.all(np.isfinite(out)))
    if bad:
        raise ValueError(f"{variant}: running one example gave non-finite outputs"
                         + (f" ({', '.join(bad)})" if len(outputs) > 1 else ""))
    info = describe(model_content)
    info["runtime"] = runner.runtime  # the interpreter it ran in (interpreter.runtime_for)
    if variants.recipe(variant).integer_only and info["float_ops"]:
        raise ValueError(f"{variant} is meant to be integer-only but holds float ops: {info['float_ops']}")
    return info

