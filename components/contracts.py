"""What the stages agree on: file names, split names, statuses, artifact property keys,
variant names, and the readers and writers of the files that cross a stage boundary.

Stages depend on this module and on the pure library (components/quantization), never on
each other's modules. No TensorFlow or TFX import here: `python -m tfx_quantization.pipeline.config` and
the settings load it without paying for TensorFlow.
"""
from __future__ import annotations

from typing import Dict, List

from tfx_quantization import fsutil

# ---- files -------------------------------------------------------------------------
MODEL_FILE = "model.tflite"  # one TFLite variant (quantizer output) or a pushed version
MANIFEST_FILE = "manifest.json"  # the quantizer's variants; a registry version's record
METRICS_FILE = "metrics.json"  # the evaluator's figures, verdicts and decision
REPORT_FILE = "report.html"  # the evaluator's report
OUTCOME_FILE = "outcome.json"  # the evaluator's decision, machine-readable, next to the report
MODEL_CONTRACT_FILE = "model_contract.json"  # the contract our trainers record next to their SavedModels
QAT_FLOAT_LAYERS_FILE = "qat_float_layers.json"  # layers selective QAT left float
SAMPLING_STATS_FILE = "sampling_stats.json"  # RepresentativeDatasetGen's counts
CALIBRATION_FILE = "data_tfrecord-00000-of-00001.gz"  # the calibration sample
BLESSED_FILE, NOT_BLESSED_FILE = "BLESSED", "NOT_BLESSED"  # as TFX's Evaluator writes them
LATEST_FILE = "LATEST"  # the registry's current version number

# ---- splits ------------------------------------------------------------------------
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"  # the selective search's split: never trained on, never the gate's
EVAL_SPLIT = "eval"  # the gate's split: training and the selective search never see it
CALIBRATION_SPLIT = "calibration"

# ---- statuses of a variant in the quantizer's manifest --------------------------------
OK, FAILED = "ok", "failed"

# ---- variants ------------------------------------------------------------------------
FLOAT32, DYNAMIC_RANGE, FLOAT16 = "float32", "dynamic_range", "float16"
FULL_INTEGER, INTEGER_ONLY, QAT_INT8 = "full_integer", "integer_only", "qat_int8"
QAT_MIXED = "qat_mixed"  # the QAT model as trained: int8 where it fake-quantized, float elsewhere
INT16X8 = "int16x8"  # 16-bit activations, 8-bit weights
SELECTIVE_INTEGER = "selective_integer"  # the accuracy-aware search; needs validation data
VARIANTS = (FLOAT32, DYNAMIC_RANGE, FLOAT16, FULL_INTEGER, INTEGER_ONLY, QAT_INT8, QAT_MIXED, INT16X8)
ALL_VARIANTS = VARIANTS + (SELECTIVE_INTEGER,)
MIXED_VARIANTS = (SELECTIVE_INTEGER, QAT_MIXED)  # integer or float per layer: the gate checks their integer-compute fraction

# ---- switches read from the environment --------------------------------------------------
VERBOSE_VAR = "QP_VERBOSE"  # full TFX/TensorFlow/converter output (pipeline/logs.py, convert.py)

# ---- built-in models (components/models builds them) ---------------------------------
BUILTIN_MODELS = ("digits_cnn", "mobilenet_v2", "tabular_mlp")

# ---- artifact custom property keys ----------------------------------------------------
# TFLiteEvaluator -> ModelEvaluation and ModelBlessing
BLESSED = "blessed"  # int 1/0, read by the Pusher's CheckBlessing
SELECTED_VARIANT = "selected_variant"
FLOAT_ACCURACY = "float_accuracy"
SELECTED_ACCURACY = "selected_accuracy"
SELECTED_ACCURACY_DROP = "selected_accuracy_drop"
SELECTED_SIZE_BYTES = "selected_size_bytes"
SELECTED_LATENCY_MS = "selected_latency_ms"
VERDICTS = "verdicts"
TARGET_SELECTIONS = "target_selections"  # JSON {target: selected variant or null}; {} without targets
NUM_THREADS = "num_threads"  # interpreter threads the latency was measured with
# TFX's name for the blessed model's artifact id, read by LatestBlessedModelStrategy: the
# quantizer's Model artifact (which holds the blessed .tflite), not the float SavedModel.
CURRENT_MODEL_ID = "current_model_id"
FLOAT_MODEL_ID = "float_model_id"  # the float SavedModel the variants were built from
QUANTIZED_MODELS_ID = "quantized_models_id"
QUANTIZED_MODELS_URI = "quantized_models_uri"
# QuantizedModelPusher -> PushedModel
PUSHED = "pushed"  # int 1/0, as TFX's Pusher
PUSHED_VERSION = "pushed_version"
PUSHED_DESTINATION = "pushed_destination"
PUSHED_TARGETS = "pushed_targets"  # JSON {target: {variant, version, created, version_dir}}
DEPLOYED_VERSION_DIR = "deployed_version_dir"  # what is deployed after this push (or not)
REASON = "reason"


# ---- readers and writers ------------------------------------------------------------
def read_manifest(models_dir: str) -> Dict[str, object]:
    """The PostTrainingQuantizer's manifest in `models_dir`."""
    path = fsutil.join(models_dir, MANIFEST_FILE)
    if not fsutil.exists(path):
        raise ValueError(f"{path} is missing: {models_dir} is not a PostTrainingQuantizer output")
    return fsutil.read_json(path)


def built_variants(manifest: Dict[str, object]) -> List[str]:
    """The names of the variants the quantizer built (status ok), in manifest order."""
    return [n for n, v in manifest["variants"].items() if v["status"] == OK]


def variant_path(models_dir: str, manifest: Dict[str, object], variant: str) -> str:
    """The .tflite file of a built variant; a ValueError naming the variant otherwise."""
    entry = manifest["variants"].get(variant)
    if not entry or entry.get("status") != OK:
        raise ValueError(f"variant {variant!r} is not a built variant of {models_dir} (built: {built_variants(manifest)})")
    return fsutil.join(models_dir, entry["file"])


def read_metrics(evaluation_dir: str) -> Dict[str, object]:
    """The TFLiteEvaluator's metrics.json in `evaluation_dir`."""
    path = fsutil.join(evaluation_dir, METRICS_FILE)
    if not fsutil.exists(path):
        raise ValueError(f"{path} is missing: {evaluation_dir} is not a TFLiteEvaluator output")
    return fsutil.read_json(path)
