"""What the stages agree on: file names, split names, statuses, artifact property keys,
variant names, and the typed records that cross a stage boundary with their one reader and
one writer each:

    Manifest (VariantEntry per variant)  manifest.json   write_manifest / read_manifest
    Evaluation                           metrics.json    write_evaluation / read_evaluation
    Decision                             outcome.json    write_decision / read_decision
      (next to the evaluator's report)
    RunOutcome                           outcome.json    write_run_outcome / read_run_outcome
      (the run's, under the output root)
    PushResult                           the PushedModel's custom properties
                                                         push_result_properties / read_push_result

Stages depend on this module and on the pure library (components/quantization), never on
each other's modules. No TensorFlow or TFX import here: `python -m tfx_quantization.pipeline.config` and
the settings load it without paying for TensorFlow.
"""
from __future__ import annotations

import json
from typing import Any, ClassVar, Dict, List, Literal, Mapping, Optional, Tuple, Type, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tfx_quantization import fsutil

# ---- files -------------------------------------------------------------------------
MODEL_FILE = "model.tflite"  # one TFLite variant (quantizer output) or a pushed version
MANIFEST_FILE = "manifest.json"  # the quantizer's variants; a registry version's record
METRICS_FILE = "metrics.json"  # the evaluator's figures, verdicts and decision
REPORT_FILE = "report.html"  # the evaluator's report
OUTCOME_FILE = "outcome.json"  # the evaluator's decision, machine-readable, next to the report
MODEL_CONTRACT_FILE = "model_contract.json"  # the contract recorded next to a SavedModel (as on its artifact)
QAT_FLOAT_LAYERS_FILE = "qat_float_layers.json"  # layers selective QAT left float
QAT_FAILED_FILE = "qat_failed.json"  # in the QAT model's folder instead of a model: {"reason": why QAT failed}
TRAINING_WARNINGS_FILE = "training_warnings.json"  # next to a trained SavedModel: what training warned about
SAMPLING_STATS_FILE = "sampling_stats.json"  # RepresentativeDatasetGen's counts
CALIBRATION_WARNINGS_FILE = "calibration_warnings.json"  # beside them: what the sample falls short of
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
# Not built by design, not an error: an input it needs is absent (selective_integer with no
# validation split). The evaluator neither judges nor counts it as a failure; its reason is shown.
SKIPPED = "skipped"

# ---- variants ------------------------------------------------------------------------
FLOAT32, DYNAMIC_RANGE, FLOAT16 = "float32", "dynamic_range", "float16"
FULL_INTEGER, INTEGER_ONLY, QAT_INT8 = "full_integer", "integer_only", "qat_int8"
QAT_MIXED = "qat_mixed"  # the QAT model as trained: int8 where it fake-quantized, float elsewhere
INT16X8 = "int16x8"  # 16-bit activations, 8-bit weights
SELECTIVE_INTEGER = "selective_integer"  # the accuracy-aware search; needs validation data
VARIANTS = (FLOAT32, DYNAMIC_RANGE, FLOAT16, FULL_INTEGER, INTEGER_ONLY, QAT_INT8, QAT_MIXED, INT16X8)
# 4-bit weights through LiteRT Quantizer (the litert_quantizer backend): built only when named in
# QuantizeSettings.variants, never by default.
INT4_WEIGHTS, INT4_BLOCKWISE = "int4_weights", "int4_blockwise"
ON_REQUEST_VARIANTS = (INT4_WEIGHTS, INT4_BLOCKWISE)
ALL_VARIANTS = VARIANTS + (SELECTIVE_INTEGER,) + ON_REQUEST_VARIANTS
MIXED_VARIANTS = (SELECTIVE_INTEGER, QAT_MIXED)  # integer or float per layer: the gate checks their integer-compute fraction

# ---- activation-range methods of the integer variants (quantization/ranges.py) -------------
MINMAX, MOVING_AVERAGE, PERCENTILE, MSE, KL = "minmax", "moving_average", "percentile", "mse", "kl"
CALIBRATION_METHODS = (MINMAX, MOVING_AVERAGE, PERCENTILE, MSE, KL)

# ---- switches read from the environment --------------------------------------------------
VERBOSE_VAR = "QP_VERBOSE"  # full TFX/TensorFlow/converter output (pipeline/logs.py, convert.py)

# ---- built-in models (components/models builds them) ---------------------------------
BUILTIN_MODELS = ("small_cnn", "mobilenet_v2", "tabular_mlp")

# ---- artifact custom property keys ----------------------------------------------------
# The first stage producing a model (QATTrainer; QATFineTuner after a stock Trainer) -> its
# Model artifacts, PostTrainingQuantizer -> quantized_models: the resolved ModelContract as
# JSON (read and written by tfx_quantization.tfx_utils.read_contract / write_contract).
MODEL_CONTRACT = "model_contract"
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
EVALUATED_REGISTRY = "evaluated_registry"  # the registry (<destination>/<model_name>) the gate's baseline came from
# QuantizedModelPusher -> PushedModel
PUSHED = "pushed"  # int 1/0, as TFX's Pusher
PUSHED_VERSION = "pushed_version"
PUSHED_DESTINATION = "pushed_destination"
PUSHED_TARGETS = "pushed_targets"  # JSON {target: {variant, version, created, version_dir}}
DEPLOYED_VERSION_DIR = "deployed_version_dir"  # what is deployed after this push (or not)
REASON = "reason"
ALREADY_DEPLOYED = "already_deployed"  # int 1/0: blessed, and LATEST already held these bytes



# ---- records ------------------------------------------------------------------------
class RecordError(ValueError):
    """A record's file is missing or unreadable; the one-line message names the file."""


class Record(BaseModel):
    """Base of the cross-stage records. Keys a record does not know are ignored, so files
    written by older or newer runs still read; a missing required key or a value of the wrong
    type is a RecordError naming the file. Written with the keys that were set only, so a
    record holds on disk exactly what its writer gave it."""

    model_config = ConfigDict(extra="ignore")

    def to_json(self) -> str:
        """The record as its file holds it: indented, key-sorted JSON of the keys that were
        set (non-finite floats as JSON's Infinity/NaN)."""
        return fsutil.to_json(self.model_dump(exclude_unset=True)).decode("utf-8")


R = TypeVar("R", bound=Record)


def _problems(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}" for e in error.errors()[:3])


def _read(folder: str, name: str, record: Type[R], what: str) -> R:
    """`record` from `folder`/`name`, or a one-line RecordError naming the file: missing (and
    which stage writes it), not JSON, or not a `record`."""
    path = fsutil.join(folder, name)
    if not fsutil.exists(path):
        raise RecordError(f"{path} is missing: {folder} is not {what}")
    try:
        data = json.loads(fsutil.read_text(path))
    except (ValueError, UnicodeDecodeError) as e:
        raise RecordError(f"{path} is not JSON ({e}): {folder} is not {what}, or the file is damaged") from None
    try:
        return record.model_validate(data)
    except ValidationError as e:
        raise RecordError(f"{path} is not a {record.__name__} record ({_problems(e)}): it was not written by "
                          f"{what}, or the file is damaged") from None


def _write(folder, name: str, record: Record) -> None:
    fsutil.write_bytes_atomic(fsutil.join(str(folder), name), record.to_json().encode("utf-8"))


# ---- the quantizer's manifest ----------------------------------------------------------
class ConverterSettings(Record):
    """How the TFLite converter is configured for a variant, by name: tf.lite.Optimize and
    tf.lite.OpsSet member names, dtype names. quantization/variants.py derives it from the
    variant's recipe; quantization/convert.py configures the converter from it."""

    optimizations: List[str]  # tf.lite.Optimize names ([] or ["DEFAULT"])
    supported_ops: List[str]  # tf.lite.OpsSet names
    supported_types: List[str]  # dtype names (["float16"] for float16 weights)
    representative_dataset: bool  # the converter is given the calibration set
    inference_input_type: str  # "float32", "int8" or "uint8"
    inference_output_type: str
    denylisted_nodes: Optional[str] = None  # selective_integer: where the layers kept float are listed
    litert_recipe: Optional[str] = None  # LiteRT Quantizer backend: its recipe, applied to the float32 model


class Quantization(Record):
    scale: float  # 0.0 for a float tensor
    zero_point: int


class TensorInfo(Record):
    """One input or output tensor of a .tflite model."""

    name: str
    dtype: str  # numpy dtype name
    shape: List[int]  # the shape signature: -1 for the batch dimension
    quantization: Quantization


class RangeMethodResult(Record):
    """One activation-range method of the sweep, measured on the validation split."""

    method: str  # CALIBRATION_METHODS
    validation_accuracy: Optional[float] = None  # of the full-integer model with its ranges; None: it failed
    gain_over_minmax: Optional[float] = None  # its validation accuracy - min/max's
    gain_low: Optional[float] = None  # the paired interval of that gain (stats.paired_drop, Newcombe)
    gain_high: Optional[float] = None
    tensors_changed: int = 0  # activation tensors whose range it moved
    median_width_ratio: Optional[float] = None  # median new width / min-max width over those tensors
    error: str = ""  # why the method failed


class RangeSweep(Record):
    """The activation-range sweep (quantization/ranges.py): every method's validation
    figures and the method the integer variants were built with."""

    methods: List[RangeMethodResult]  # min/max first, then in the settings' order
    chosen: str
    why: str
    percentile: float
    confidence: float  # one-sided, of the paired gain interval
    num_validation_examples: int
    float_accuracy_on_validation: float
    num_tensors: int  # activation tensors with a recorded range (the model's inputs left out)
    activations: str = "int8"  # the activation type the methods were measured with ("int8", "int16")
    applied_to: List[str] = []  # the variants built with the chosen ranges (none when min/max stays)
    # variant -> why it kept min/max: its conversion with the ranges failed, or its recipe takes
    # no swept ranges (VariantRecipe.no_range_methods: qat_int8's were learned in training)
    not_applied: Dict[str, str] = {}
    seconds: float = 0.0  # the sweep's wall time


class LayerError(Record):
    """QuantizationDebugger's error of one op's int8 output against the float op."""

    tensor_name: str
    op_name: str
    mean_squared_error: float
    scale: float
    # The ranking metric: the error in quantization steps; inf when the scale is 0 (None in
    # metrics.json, which holds no non-finite number).
    rmse_over_scale: Optional[float]
    max_abs_error: float


class SearchStep(Record):
    """One conversion of the selective search, measured on the validation sample."""

    num_float_layers: int
    float_layers: List[str]  # tensor names kept float
    validation_accuracy: float
    accuracy_drop: float  # float model's validation accuracy minus this step's
    passed: bool


class SearchBudget(Record):
    max_drop: float
    max_float_layers: int
    max_steps: int


class SelectiveSearch(Record):
    """The selective_integer search: layer errors worst first, every step, the result."""

    ranking_metric: str
    input_scaling_ops: List[str] = []  # tried first: they decide the input's int8 scale
    layer_errors: List[LayerError]
    steps: List[SearchStep]  # in the order they ran
    float_accuracy_on_validation: float
    budget: SearchBudget
    num_validation_examples: int
    float_layers: Optional[List[str]] = None  # the result's float layers; None: nothing passed
    best_step: Optional[SearchStep] = None  # when nothing passed: the smallest drop reached
    integer_compute_fraction: Optional[float] = None  # of the result


class EqualizedPair(Record):
    """One pair cross-layer equalization balanced (quantization/weight_corrections.py): the
    smallest over the largest per-channel weight range (1 = all even) before and after, of
    the producer's output channels (batch norm folded) and the consumer's input channels."""

    producer: str
    consumer: str
    through: List[str] = []  # the layers between them (batch norm, ReLU, pooling, flatten)
    producer_range_ratio_before: float
    producer_range_ratio_after: float
    consumer_range_ratio_before: float
    consumer_range_ratio_after: float


class SkippedPair(Record):
    producer: str
    consumer: str
    reason: str  # e.g. a ReLU6 between them (not positively homogeneous)


class CorrectedLayer(Record):
    """One layer empirical bias correction shifted: the per-output-channel mean error that
    int8 weight quantization caused on the calibration sample (output units), removed."""

    layer: str
    folded_batch_norm: Optional[str] = None  # its beta took the shift
    channels: int
    mean_abs_error: float  # mean over channels of |mean error|
    max_abs_error: float


class WeightCorrections(Record):
    """What was done to the float model before the integer variants converted from it
    (QuantizeSettings.cross_layer_equalization / bias_correction)."""

    requested: List[str]  # "cross_layer_equalization", "bias_correction"
    applied: List[str] = []
    variants: List[str] = []  # the variants converted from the corrected model
    not_applied: Dict[str, str] = {}  # requested correction -> why it was not applied
    equalized_pairs: List[EqualizedPair] = []
    skipped_pairs: List[SkippedPair] = []
    equalization_sweeps: int = 0
    output_change: Optional[float] = None  # equalization: max |output change| / max |output|, calibration data
    corrected_layers: List[CorrectedLayer] = []
    skipped_layers: Dict[str, str] = {}  # layer -> why bias correction left it alone
    weight_scheme: Dict[str, str] = {}  # layer type -> how its weights were quantized in the simulation


class VariantFile(Record):
    """Whether a variant was built, and its file (relative to the quantizer's output)."""

    status: Literal["ok", "failed", "skipped"]
    reason: str = ""  # why it failed or was skipped; "" when built
    file: Optional[str] = None  # "<variant>/model.tflite" when built
    size_bytes: Optional[int] = None
    sha256: Optional[str] = None  # of the file's bytes, 64 hex digits


class VariantBuild(VariantFile):
    """A variant's file and how it was made and runs, as the evaluation and its report
    carry it from the manifest (Evaluation.manifest)."""

    # The activation-range method its calibrated ranges came from (ranges.py); None: the converter's min/max.
    calibration_method: Optional[str] = None
    weight_corrections: Optional[List[str]] = None  # corrections applied to the model it converted from
    runtime: Optional[str] = None  # the interpreter that runs it: "tensorflow-lite", or "ai-edge-litert" (int4 weights)


class VariantEntry(VariantBuild):
    """One variant in the quantizer's manifest: the recipe it was built from (source model,
    converter settings, device class) and, when built, what the .tflite holds."""

    name: str
    source_model: Literal["model", "qat_model"]  # the float or the quantization-aware SavedModel
    converter_settings: ConverterSettings
    device_class: str
    size_ratio_to_float32: Optional[float] = None
    integer_compute_fraction: Optional[float] = None  # share of arithmetic done in integer ops, 0..1
    inputs: Optional[List[TensorInfo]] = None
    outputs: Optional[List[TensorInfo]] = None
    op_counts: Optional[Dict[str, int]] = None  # op name -> count
    num_ops: Optional[int] = None
    float_ops: Optional[Dict[str, int]] = None  # ops with a float input or output -> count
    tensor_dtypes: Optional[Dict[str, int]] = None  # dtype name -> number of tensors
    selective: Optional[SelectiveSearch] = None  # selective_integer only

    # What a registry version records of the variant it holds (its manifest's "model").
    DESCRIPTION: ClassVar[Tuple[str, ...]] = ("inputs", "outputs", "converter_settings", "device_class", "op_counts")

    def description(self) -> Dict[str, Any]:
        """The model's interface and recipe, as a registry version's manifest records it."""
        return self.model_dump(include=set(self.DESCRIPTION), exclude_unset=True)


class DataFiles(Record):
    files: List[str] = []
    max_samples: Optional[int] = None


class Manifest(Record):
    """The PostTrainingQuantizer's manifest.json: every variant it tried, in build order."""

    variants: Dict[str, VariantEntry]
    activation_ranges: Optional[RangeSweep] = None  # the activation-range sweep (int8 activations), when it ran
    activation_ranges_int16: Optional[RangeSweep] = None  # the sweep with 16-bit activations (int16x8), when it ran
    model_spec: Dict[str, Any] = {}  # the ModelSpec the variants were built for (ModelSpec.to_json)
    integer_io_type: str = "int8"
    tensorflow_version: str = ""
    created_at: str = ""  # ISO 8601, UTC
    sources: Dict[str, str] = {}  # input artifact URIs and ids, float_model, qat_model
    calibration: DataFiles = DataFiles()
    validation: DataFiles = DataFiles()  # the selective search's examples (never the gate's)
    settings: Dict[str, Any] = {}  # the QuantizeSettings the stage ran with
    weight_corrections: Optional[WeightCorrections] = None  # equalization / bias correction before conversion
    # What the run should hear about (training's warnings, a QAT stage that failed, a
    # requested variant that failed): the evaluator puts them in its summary and report.
    warnings: List[str] = []

    def built(self) -> List[str]:
        """The names of the variants built (status ok), in manifest order."""
        return [n for n, v in self.variants.items() if v.status == OK]

    def with_status(self, status: str) -> Dict[str, str]:
        """{name: reason} of the variants with `status` (FAILED or SKIPPED), in manifest order."""
        return {n: v.reason for n, v in self.variants.items() if v.status == status}


def write_manifest(models_dir, manifest: Manifest) -> None:
    """Writes `models_dir`/manifest.json (the quantizer's last file: its commit marker)."""
    _write(models_dir, MANIFEST_FILE, manifest)


def read_manifest(models_dir: str) -> Manifest:
    """The PostTrainingQuantizer's manifest in `models_dir`; RecordError when it is missing
    or unreadable."""
    return _read(models_dir, MANIFEST_FILE, Manifest, "a PostTrainingQuantizer output")


def variant_path(models_dir: str, manifest: Manifest, variant: str) -> str:
    """The .tflite file of a built variant; a ValueError naming the variant otherwise."""
    entry = manifest.variants.get(variant)
    if entry is None or entry.status != OK:
        raise ValueError(f"variant {variant!r} is not a built variant of {models_dir} (built: {manifest.built()})")
    return fsutil.join(models_dir, entry.file)


# ---- what a training stage leaves next to its models -----------------------------------
def write_qat_failure(qat_dir: str, reason: str) -> None:
    """Records in the QAT model's folder that there is no QAT model, and why (QAT_FAILED_FILE):
    the quantizer records the QAT variants as failed with the reason and builds the rest."""
    fsutil.write_json_atomic(fsutil.join(qat_dir, QAT_FAILED_FILE), {"reason": reason})


def read_qat_failure(qat_dir: str) -> str:
    """Why the QAT stage produced no model in `qat_dir` ('' when it did not fail)."""
    path = fsutil.join(qat_dir, QAT_FAILED_FILE)
    return str(fsutil.read_json(path).get("reason") or "failed") if fsutil.exists(path) else ""


def write_warnings(folder: str, name: str, warnings: List[str]) -> None:
    """Records a stage's warnings in `folder`/`name` (a JSON list; nothing when there are
    none): the quantizer carries them into its manifest's `warnings`, the evaluator into
    the summary, the report and outcome.json."""
    if warnings:
        fsutil.write_json_atomic(fsutil.join(folder, name), [str(w) for w in warnings])


def read_warnings(folder: str, name: str) -> List[str]:
    path = fsutil.join(folder, name)
    return [str(w) for w in fsutil.read_json(path)] if fsutil.exists(path) else []


def write_training_warnings(model_dir: str, warnings: List[str]) -> None:
    """Training's warnings, next to its SavedModel (TRAINING_WARNINGS_FILE)."""
    write_warnings(model_dir, TRAINING_WARNINGS_FILE, warnings)


def read_training_warnings(model_dir: str) -> List[str]:
    return read_warnings(model_dir, TRAINING_WARNINGS_FILE)


def read_calibration_warnings(calibration_files: List[str]) -> List[str]:
    """What RepresentativeDatasetGen warned about the sample these files hold: its
    CALIBRATION_WARNINGS_FILE, in its output folder, which holds the files' split folder
    (Split-calibration). [] for files it did not write."""
    if not calibration_files:
        return []
    return read_warnings(calibration_files[0].rstrip("/").rsplit("/", 2)[0], CALIBRATION_WARNINGS_FILE)


# ---- the evaluator's evaluation and decision --------------------------------------------
class Verdict(Record):
    passed: bool
    reasons: List[str]  # why it failed; ["all bounds hold"] (or the target's equivalent) when it passed


class Selection(Record):
    """How the gate chose among the passing variants (gate.select)."""

    policy: str  # "smallest", "fastest" or "preference"
    why: str
    target: Optional[str] = None  # the target whose selection this is (the primary one)
    fastest: Optional[str] = None  # 'fastest' only: the fastest passing variant,
    tied: Optional[List[str]] = None  # the variants within the timing noise of it (smallest: within the size margin),
    noise_ms: Optional[float] = None  # and that noise
    smallest: Optional[str] = None  # 'smallest' only: the smallest passing variant,
    size_margin_bytes: Optional[float] = None  # and the size_tie_tolerance margin around it


class TargetDecision(Record):
    """One deployment target: its settings, every variant's verdict, its selection."""

    settings: Dict[str, Any]  # the DeploymentTarget
    selected: Optional[str] = None
    selection: Selection
    verdicts: Dict[str, Verdict] = {}


class DeployedShift(Record):
    """The deployed model's metric now against the one its registry manifest recorded."""

    version: Optional[str] = None
    recorded: float
    now: float
    fall: float  # recorded - now
    flagged: bool  # fall > max_deployed_shift
    message: str = ""


def figures_by_output(figures: Dict[str, Any], primary: str) -> Dict[str, Dict[str, Any]]:
    """{output name: figures} of one model's figures (a variant's, the float model's): the
    primary output's are the figures themselves (what the gate reads), a multi-output
    model's other outputs' are under figures["outputs"]."""
    return {primary: figures, **figures.get("outputs", {})}


class Evaluation(Record):
    """The TFLiteEvaluator's metrics.json: figures, verdicts and the decision.

    `variants` holds each variant's figures as the evaluator measured them (the metric
    under its name, size_bytes, latency_ms_*, integer_compute_fraction, vs_float and
    vs_deployed paired comparisons, tflm, error...): the gate's input, keyed by metric."""

    blessed: bool
    selected_variant: Optional[str] = None
    selection: Selection  # how it was selected, or why nothing was
    metric: str = "accuracy"  # the gate's metric (a label-free model: sqnr_db, shown, not bounded)
    task: str = "multiclass"  # the contract's task of the judged output
    output: str = ""  # the judged (primary) output's signature name
    # Every measured output -> its task (the primary one included); a multi-output model's others have
    # their figures in each variant's (and float_model's) figures["outputs"][name].
    outputs: Dict[str, str] = {}
    float_model: Dict[str, Any] = {}  # the float model's metrics on the eval split
    # The task's sanity reference in the gate's metric: the majority-class rate, AUC 0.5,
    # or the training mean's error (regression); None when there is none.
    majority_class_rate: Optional[float] = None
    trivial_predictor: Optional[Dict[str, Any]] = None  # regression: the training mean's figures and its value(s)
    variants: Dict[str, Dict[str, Any]] = {}
    verdicts: Dict[str, Verdict] = {}
    targets: Dict[str, TargetDecision] = {}
    warnings: List[str] = []
    deployed_shift: Optional[DeployedShift] = None
    baseline: Optional[Dict[str, Any]] = None  # the deployed model's figures and registry info
    history: List[Dict[str, Any]] = []  # the registry's versions (Registry.list), oldest first
    settings: Dict[str, Any] = {}  # the GateSettings the gate ran with
    host: Dict[str, Any] = {}
    num_eval_examples: int = 0
    manifest: Dict[str, VariantBuild] = {}  # the quantizer's variants this evaluation read, how built, where run
    selective: Optional[SelectiveSearch] = None
    activation_ranges: Optional[RangeSweep] = None  # the quantizer's activation-range sweep (int8), for the report
    activation_ranges_int16: Optional[RangeSweep] = None  # its sweep with 16-bit activations (int16x8)
    created_at: str = ""

    def by_output(self, figures: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
        """One model's figures per measured output, the primary first (figures_by_output)."""
        return figures_by_output(figures, self.output)

    def selected_figures(self) -> Optional[Dict[str, Any]]:
        """The selected variant's figures, or None when nothing was selected."""
        return self.variants[self.selected_variant] if self.selected_variant else None


def write_evaluation(evaluation_dir, evaluation: Evaluation) -> None:
    """Writes `evaluation_dir`/metrics.json."""
    _write(evaluation_dir, METRICS_FILE, evaluation)


def read_evaluation(evaluation_dir: str) -> Evaluation:
    """The TFLiteEvaluator's metrics.json in `evaluation_dir`; RecordError when it is
    missing or unreadable."""
    return _read(evaluation_dir, METRICS_FILE, Evaluation, "a TFLiteEvaluator output")


class Decision(Record):
    """The evaluator's decision for automation (outcome.json next to the report)."""

    blessed: bool
    selected_variant: Optional[str] = None
    why: List[str] = []  # the selection's reason, or each variant's reasons for failing
    warnings: List[str] = []
    skipped: Dict[str, str] = {}  # variants not built by design (status skipped) -> why: neither failed nor judged
    deployed_shift: Optional[DeployedShift] = None
    metric: str = "accuracy"
    output: str = ""  # the output the metric judges (the contract's primary output)
    targets: Dict[str, Optional[str]] = {}  # target -> selected variant (None: none)
    selected_metrics: Optional[Dict[str, Any]] = None  # the metric, accuracy_drop, vs_float, size, latency
    created_at: str = ""


def write_decision(evaluation_dir, decision: Decision) -> None:
    """Writes `evaluation_dir`/outcome.json."""
    _write(evaluation_dir, OUTCOME_FILE, decision)


def read_decision(evaluation_dir: str) -> Decision:
    """The evaluator's outcome.json in `evaluation_dir`; RecordError when it is missing or
    unreadable."""
    return _read(evaluation_dir, OUTCOME_FILE, Decision, "a TFLiteEvaluator output")


# ---- the pusher's result and the run's outcome --------------------------------------------
class TargetPush(Record):
    """What the push did for one deployment target's registry."""

    variant: Optional[str] = None  # None: nothing selected for the target
    version: Optional[int] = None
    created: Optional[bool] = None  # False: the target's LATEST already held these bytes
    version_dir: Optional[str] = None
    reason: Optional[str] = None  # why nothing was selected


class PushResult(Record):
    """What the QuantizedModelPusher did; recorded as the PushedModel's custom properties."""

    pushed: bool  # a new version was created
    already_deployed: bool = False  # blessed, and LATEST already held the same bytes: nothing new
    reason: str
    version: Optional[int] = None  # the pushed version, or the one that already held the bytes
    deployed_version_dir: str = ""  # what is deployed after this push: that version's folder ("" when nothing is)
    targets: Dict[str, TargetPush] = {}


def push_result_properties(result: PushResult) -> Dict[str, Any]:
    """The PushedModel's custom properties (as TFX's Pusher: pushed 1/0, destination and
    version when pushed), for tfx_utils.set_properties."""
    properties: Dict[str, Any] = {
        PUSHED: int(result.pushed), ALREADY_DEPLOYED: int(result.already_deployed), REASON: result.reason,
        PUSHED_VERSION: "" if result.version is None else str(result.version),
        DEPLOYED_VERSION_DIR: result.deployed_version_dir,
        PUSHED_TARGETS: {n: t.model_dump(exclude_unset=True) for n, t in result.targets.items()},
    }
    if result.pushed:
        properties[PUSHED_DESTINATION] = result.deployed_version_dir
    return properties


def read_push_result(properties: Mapping[str, Any]) -> PushResult:
    """A PushResult from a PushedModel's custom properties ({key: value}, JSON values as
    strings, as ML Metadata returns them); a one-line RecordError when they are not one. A
    PushedModel of a run before already_deployed was recorded has it inferred: not pushed,
    yet a version named, means blessed and already in the registry."""
    what = "the PushedModel's properties are not a push result"
    if PUSHED not in properties:
        raise RecordError(f"{what}: there is no {PUSHED!r} property")
    try:
        targets = json.loads(properties.get(PUSHED_TARGETS) or "{}")
    except ValueError as e:
        raise RecordError(f"{what}: {PUSHED_TARGETS!r} is not JSON ({e})") from None
    version = str(properties.get(PUSHED_VERSION) or "")
    pushed = properties[PUSHED] == 1
    already = properties.get(ALREADY_DEPLOYED)
    try:
        return PushResult(
            pushed=pushed, reason=str(properties.get(REASON, "")),
            already_deployed=bool(already) if already is not None else (not pushed and version.isdigit()),
            version=int(version) if version.isdigit() else None,
            deployed_version_dir=str(properties.get(DEPLOYED_VERSION_DIR) or properties.get(PUSHED_DESTINATION) or ""),
            targets=targets)
    except ValidationError as e:
        raise RecordError(f"{what} ({_problems(e)})") from None


class RunOutcome(Decision):
    """The run's outcome for automation (<output_root>/outcome.json): the evaluator's
    decision joined with what the pusher did."""

    report: str = ""  # the evaluator's report.html
    pushed: bool = False
    pushed_version: Optional[int] = None  # when a new version was pushed
    push_reason: str = ""
    deployed_version_dir: Optional[str] = None
    deployed: bool = False  # a blessed model is in the registry: pushed now, or already there


def write_run_outcome(output_root, outcome: RunOutcome) -> None:
    """Writes `output_root`/outcome.json."""
    _write(output_root, OUTCOME_FILE, outcome)


def read_run_outcome(output_root: str) -> RunOutcome:
    """The run's outcome.json under `output_root`; RecordError when missing or unreadable."""
    return _read(output_root, OUTCOME_FILE, RunOutcome, "a pipeline's output root (no run has written an outcome)")
