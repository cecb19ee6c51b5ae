"""The settings of each stage: one typed, documented model per stage.

Each stage takes one of these as a single JSON execution parameter named `settings`, the
way TFX's Evaluator takes one `EvalConfig`. A setting's type, default, documentation and
validation live here and nowhere else: validation runs when the model is built (so a bad
value fails when the pipeline is built, before any stage runs) and again when an executor
decodes its parameter. `pipeline/config.py` composes these models into the pipeline's
configuration; it restates none of their fields.

pydantic does the typing, JSON round trip, unknown-key rejection and range checks (it is
in the lock already); the cross-field rules are the validators below.
"""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tfx_quantization import contracts
# Re-exported: the settings' public names include the base and the contract, each defined
# once below the settings (settings_base.py, model_contract.py).
from tfx_quantization.model_contract import ImageDecoding, InputFeatures, ModelContract  # noqa: F401
from tfx_quantization.settings_base import SettingsError, StageSettings, describe_errors  # noqa: F401

DEFAULT_MAX_ACCURACY_DROP = 0.01
SMALLEST, FASTEST = "smallest", "fastest"
UPPER_BOUND, POINT, LOWER_BOUND = "upper_bound", "point", "lower_bound"  # the gate's drop decision
UNIFORM, STRATIFIED = "uniform", "stratified"  # calibration sampling strategies
# The gate's metrics by name; quantization/metrics.py holds their table (direction, interval,
# tasks) and checks it lists these.
METRICS = ("accuracy", "top_k_accuracy", "auc", "mae", "rmse", "micro_f1", "macro_f1")


def _check_variants(names: List[str]) -> List[str]:
    unknown = [n for n in names if n not in contracts.ALL_VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}: valid variants are {list(contracts.ALL_VARIANTS)}")
    return names


class FineTuneSettings(StageSettings):
    """QATFineTuner: quantization-aware fine-tuning of a trained model (QATTrainer's second
    phase takes the same fields)."""

    qat_epochs: int = Field(2, ge=1, description="quantization-aware fine-tuning epochs")
    qat_steps_per_epoch: int = Field(0, ge=0, description="0: one pass per QAT epoch")
    qat_learning_rate: float = Field(1e-4, gt=0)
    qat_range_batches: int = Field(8, ge=1, description="train batches whose float activations set the QAT "
                                                        "model's starting ranges (as calibration does)")
    batch_size: int = Field(32, ge=1)
    seed: int = Field(42, description="seeds training (and calibration sampling unless set there)")


class TrainSettings(FineTuneSettings):
    """QATTrainer: the model and both training phases (float training, then the fine-tuning
    fields it shares with FineTuneSettings). What the model takes and predicts is the model
    contract (tfx_quantization.model_contract), given to QATTrainer beside these."""

    model: str = Field("small_cnn", description=f"built-in model: one of {list(contracts.BUILTIN_MODELS)}")
    module_file: str = Field("", description="a user module defining build_model(); overrides `model`")
    model_kwargs: Dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the builder")
    epochs: int = Field(10, ge=1, description="float training epochs")
    steps_per_epoch: int = Field(0, ge=0, description="0: one pass over the train split per epoch")
    learning_rate: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _builder(self) -> "TrainSettings":
        if not self.module_file and self.model not in contracts.BUILTIN_MODELS:
            raise ValueError(
                f"model {self.model!r} is not a built-in model: use one of {list(contracts.BUILTIN_MODELS)} "
                "or set module_file")
        return self


class CalibrationSettings(StageSettings):
    """RepresentativeDatasetGen: the seeded calibration sample."""

    source_split: str = Field(contracts.TRAIN_SPLIT, min_length=1, description="the split to sample from")
    num_samples: int = Field(200, ge=1, description="examples in the calibration sample")
    strategy: Optional[Literal["uniform", "stratified"]] = Field(
        None, description="uniform, or stratified by label (per-class quotas; a real-valued label, the regression "
                          "target: per quantile bin); None: stratified when a label key is known (label_key, or the "
                          "model's contract), else uniform")
    quantile_bins: int = Field(10, ge=2, description="strata of a real-valued label: this many bins between its "
                                                     "approximate quantiles (Beam's ApproximateQuantiles)")
    label_key: str = Field("", description="label feature for stratified sampling; '': the label_key of the model's "
                                           "contract (in the pipeline: contract.label_key)")
    seed: Optional[int] = Field(None, description="None in the pipeline: the trainer's seed; standalone: 0")

    def resolved(self, label_key: str = "") -> "CalibrationSettings":
        """These settings with the label key decided (their own, else `label_key`: the one
        the model's contract names, '' when none) and so the strategy: None becomes
        stratified when there is a label key, else uniform. A SettingsError when the
        strategy is stratified and no label key is known."""
        label = self.label_key or label_key
        strategy = self.strategy or (STRATIFIED if label else UNIFORM)
        if strategy == STRATIFIED and not label:
            raise SettingsError("CalibrationSettings: strategy 'stratified' needs label_key, the class label feature "
                                "(or a model whose contract names it)")
        return self.model_copy(update={"label_key": label, "strategy": strategy})


class QuantizeSettings(StageSettings):
    """PostTrainingQuantizer: which variants, and the selective_integer search."""

    variants: List[str] = Field(default_factory=list, description="variants to build; empty: all the inputs allow")
    integer_io_type: Literal["int8", "uint8"] = Field("int8", description="I/O type of the integer-only variants")
    max_calibration_samples: Optional[int] = Field(None, ge=1, description="None: the whole calibration sample")
    calibration_methods: List[Literal[contracts.CALIBRATION_METHODS]] = Field(
        default_factory=list,
        description="activation-range methods the integer variants with calibrated activations (full_integer, "
                    "integer_only, selective_integer; int16x8 with its own 16-bit sweep) may be built with, besides the "
                    "converter's min/max (minmax, moving_average, percentile, mse, kl): each is measured on the "
                    "validation split and one replaces min/max only when it is better there beyond chance; "
                    "[] (the default: a sweep costs about 10 s on the digits CNN) or [minmax]: min/max only, no sweep. "
                    "Needs validation data and a classifier")
    calibration_percentile: float = Field(99.99, gt=50, lt=100, description="the percentile method's share of |x| "
                                                                              "kept inside the range, in %")
    calibration_confidence: float = Field(0.95, gt=0.5, lt=1, description="one-sided confidence that a method beats "
                                                                            "min/max on validation before it is used")
    validation_split: str = Field(contracts.VALIDATION_SPLIT, min_length=1,
                                  description="split the selective search validates on: held out from training, "
                                              "never the gate's split")
    validation_samples: int = Field(1000, ge=1, description="examples the selective search validates on")
    search_max_drop: Optional[float] = Field(
        None, ge=0, description="accuracy drop the selective search accepts; None: the gate's max_accuracy_drop")
    max_float_layers: int = Field(8, ge=1, description="most layers the selective search may keep float")
    max_search_steps: int = Field(8, ge=1, description="most conversions the selective search may spend")
    selective_integer_io: bool = Field(False, description="integer I/O for selective_integer (float I/O otherwise)")
    cross_layer_equalization: bool = Field(
        False, description="before the int8-weight variants convert: even out per-channel weight ranges of Conv2D/"
                           "DepthwiseConv2D/Dense -> ReLU -> Conv2D/DepthwiseConv2D/Dense pairs, the float model "
                           "unchanged (Nagel et al. 2019); pairs through ReLU6 are skipped and listed")
    bias_correction: bool = Field(
        False, description="before the int8-weight variants convert: subtract from each layer's bias the "
                           "per-channel mean output error int8 weight quantization causes on the calibration sample "
                           "(empirical bias correction, Nagel et al. 2019); needs calibration data")

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: List[str]) -> List[str]:
        return _check_variants(v)

    @field_validator("calibration_methods")
    @classmethod
    def _methods(cls, v: List[str]) -> List[str]:
        repeated = sorted({m for m in v if v.count(m) > 1})
        if repeated:
            raise ValueError(f"method(s) {repeated} listed more than once: name each method once")
        return v

    @field_validator("validation_split")
    @classmethod
    def _not_gate_split(cls, v: str) -> str:
        if v == contracts.EVAL_SPLIT:
            raise ValueError(
                f"{v!r} is the split the evaluator's gate uses: searching on it would leak the gate's data into "
                "the model choice; use a dedicated validation split (the default ExampleGen writes 'validation') or, as a last resort, 'train'")
        return v

    @property
    def effective_search_max_drop(self) -> float:
        return DEFAULT_MAX_ACCURACY_DROP if self.search_max_drop is None else self.search_max_drop


class DeploymentTarget(BaseModel):
    """A device class the model ships to: its runtime and budgets (a list entry, not code).

    litert: the LiteRT (TFLite) interpreter with XNNPACK, as phones and servers run it.
    tflm: TFLite Micro, as microcontrollers run it: the variant must allocate and run in it,
    and its tensor arena and file must fit the device's RAM and flash budgets.
    integer_only + integer_io describe an Edge TPU-style accelerator: every compute op integer,
    int8/uint8 input and output (the Edge TPU compiler itself is not run: it is not
    installable here; op support and its partitioning are not checked).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$",
                      description="the target's name (lowercase letters, digits, _ and -); its registry folder")
    runtime: Literal["litert", "tflm"] = Field("litert", description="litert or tflm (TFLite Micro)")
    integer_only: bool = Field(False, description="every compute op must be integer (integer-compute fraction 1.0)")
    integer_io: bool = Field(False, description="input and output must be int8 or uint8")
    max_model_bytes: Optional[int] = Field(None, ge=1, description="flash budget: the .tflite file size")
    max_arena_bytes: Optional[int] = Field(None, ge=1, description="RAM budget: TFLM's tensor arena (tflm only)")
    max_latency_ms: Optional[float] = Field(None, gt=0, description="median host latency budget (litert only)")
    selection: Optional[Union[Literal["smallest", "fastest"], List[str]]] = Field(
        None, description="this target's selection policy; None: the gate's")

    @model_validator(mode="after")
    def _runtime_budgets(self) -> "DeploymentTarget":
        if self.max_arena_bytes is not None and self.runtime != "tflm":
            raise ValueError(f"target {self.name!r}: max_arena_bytes is a TFLite Micro budget: set runtime: tflm")
        if self.max_latency_ms is not None and self.runtime != "litert":
            raise ValueError(f"target {self.name!r}: max_latency_ms is measured with the LiteRT interpreter on this "
                             "host, not on a microcontroller: drop it or use runtime: litert")
        if isinstance(self.selection, list):
            _check_variants(self.selection)
        return self


class GateSettings(StageSettings):
    """TFLiteEvaluator: the gate's bounds, the selection policy, and how figures are measured.

    Bounds are inclusive; None disables a bound (components/tflite_evaluator/README.md).
    """

    max_accuracy_drop: Optional[float] = Field(
        DEFAULT_MAX_ACCURACY_DROP, ge=0, description="bound on the gate metric's degradation in its own units: "
                                                     "float - variant for accuracy, AUC, F1 (0.01 = 1 pp), "
                                                     "variant - float for MAE, RMSE (label units); None: off")
    drop_decision: Literal["upper_bound", "point", "lower_bound"] = Field(
        UPPER_BOUND, description="upper_bound: pass only when the drop's upper confidence bound is within the "
                                 "bound; lower_bound: fail only when its lower bound exceeds it; point: the "
                                 "observed drop")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="one-sided confidence of the drop's bounds "
                                                              "(0.95: the two-sided 90% paired interval)")
    max_relative_drop: Optional[float] = Field(None, ge=0, le=1, description="bound on the degradation / the float "
                                                                             "model's metric (MAE: 0.05 = 5 % more "
                                                                             "error)")
    max_model_bytes: Optional[int] = Field(None, ge=1, description="bound on the .tflite file size")
    max_latency_ms: Optional[float] = Field(None, gt=0, description="bound on the median single-example latency")
    min_accuracy: Optional[float] = Field(None, ge=0, le=1, description="floor on the variant's metric (metrics "
                                                                        "where higher is better)")
    min_margin_over_majority: Optional[float] = Field(
        0.02, ge=0, le=1, description="the task's sanity bound: the float model and a variant must beat the trivial "
                                      "predictor by this much: the majority-class rate of the eval labels (top-k: "
                                      "the k largest classes), AUC 0.5, or (error metrics, as a share of its error) "
                                      "the training mean predicted for every example; None: off")
    min_sqnr_db: Optional[float] = Field(
        None, description="fidelity floor: a variant's output SQNR against the float model's on the eval split, in "
                          "dB (10 log10 of signal over quantization-noise power); None: off. With min_cosine_"
                          "similarity, what gates a model without labels (contract.task none)")
    min_cosine_similarity: Optional[float] = Field(
        None, ge=-1, le=1, description="fidelity floor: the mean per-example cosine similarity of a variant's "
                                       "output to the float model's; None: off")
    allow_float32: bool = Field(False, description="whether the unquantized float32 variant may be selected")
    min_integer_compute_fraction: float = Field(
        0.8, ge=0, le=1, description="a mixed variant (selective_integer, qat_mixed) doing a smaller share of its "
                                     "arithmetic (multiply-accumulates; elements of elementwise ops) in integer "
                                     "ops counts as float32 for the gate")
    selection: Union[Literal["smallest", "fastest"], List[str]] = Field(
        SMALLEST, description="smallest, fastest, or a list of variant names in order of preference")
    metric: Optional[Literal[METRICS]] = Field(
        None, description="the metric the gate judges on the contract's output; None: its task's default "
                          "(multiclass: accuracy, binary: auc, regression: mae, multilabel: micro_f1; task none: "
                          "only the fidelity floors)")
    top_k: int = Field(5, ge=1, description="k of top_k_accuracy")
    latency_tie_tolerance: float = Field(
        0.05, ge=0, le=1, description="fastest: variants within this share of the fastest median, or within the "
                                      "measured spread (IQR), are tied (ties: the larger integer-compute "
                                      "fraction, then the better metric, then the smaller file)")
    size_tie_tolerance: float = Field(
        0.05, ge=0, le=1, description="smallest: variants within this share of the smallest file are tied (ties: "
                                      "the larger integer-compute fraction, then the better metric)")
    max_deployed_shift: Optional[float] = Field(
        0.05, ge=0, le=1, description="flag a shift when the deployed model scores this much below its own "
                                      "manifest's figure on this run's eval data; None: off")
    targets: List[DeploymentTarget] = Field(
        default_factory=list, description="deployment targets, each selected on its own (a JSON list of "
                                          "{name, runtime, integer_only, integer_io, max_model_bytes, "
                                          "max_arena_bytes, max_latency_ms, selection}); []: one default target")
    device_check_examples: int = Field(
        500, ge=1, description="eval examples each variant runs on a target runtime other than LiteRT")
    latency_runs: int = Field(50, ge=1, description="timed runs per variant (after the warm-up)")
    latency_warmup: int = Field(5, ge=0, description="untimed warm-up runs per variant")
    num_threads: int = Field(1, ge=1, description="interpreter threads")
    eval_batch_size: int = Field(256, ge=1, description="largest batch per interpreter call")
    eval_split: str = Field(contracts.EVAL_SPLIT, min_length=1, description="the split the gate evaluates")

    @field_validator("selection", mode="before")
    @classmethod
    def _selection_policy(cls, v):
        if isinstance(v, str) and v not in (SMALLEST, FASTEST):
            raise ValueError(f"use {SMALLEST!r}, {FASTEST!r} or a list of variant names in order of preference")
        return v

    @field_validator("selection")
    @classmethod
    def _selection(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("an empty list: name the variants in order of preference")
            _check_variants(v)
        return v

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, v):
        names = [t.name for t in v]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"target name(s) {duplicated} used more than once: each target needs its own name")
        return v

    @model_validator(mode="after")
    def _has_accuracy_bound(self) -> "GateSettings":
        if self.max_accuracy_drop is None and self.max_relative_drop is None:
            raise ValueError("set max_accuracy_drop and/or max_relative_drop: the gate needs an accuracy bound")
        return self


class PushSettings(StageSettings):
    """QuantizedModelPusher: where the registry is and the model's name in it."""

    destination: str = Field("", description="registry base: <destination>/<model_name>/<version>/; "
                                             "'' in the pipeline: <output_root>/serving")
    model_name: str = Field("", description="the model's folder in the registry; '' in the pipeline: pipeline_name")
    signing_key: str = Field("", description="PEM private key: sign each version's manifest (DSSE); '': unsigned")
    public_key: str = Field("", description="PEM public key: the deployed baseline must verify with it; '': "
                                            "hashes only")

    @field_validator("model_name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if "/" in v or v.startswith(".") or v.strip() != v:
            raise ValueError("must be a plain folder name (no '/', no leading '.', no surrounding spaces)")
        return v

    def check_complete(self) -> None:
        """What a standalone Pusher needs that the pipeline fills in: the registry and the name."""
        if not self.destination:
            raise SettingsError("PushSettings: destination is empty: name the registry's base folder or URI")
        if not self.model_name:
            raise SettingsError("PushSettings: model_name is empty: name the model's folder in the registry "
                                "(<destination>/<model_name>/<version>/)")
