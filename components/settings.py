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

import dataclasses
import json
from typing import Any, Dict, List, Literal, Optional, Type, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tfx_quantization import contracts
from tfx_quantization.quantization.model_spec import PROBABILITIES, ImageSpec, ModelSpec

DEFAULT_MAX_ACCURACY_DROP = 0.01
DIGITS_PIXEL_KEYS = [f"pixel_{i:02d}" for i in range(64)]
SMALLEST, FASTEST = "smallest", "fastest"
UPPER_BOUND, POINT, LOWER_BOUND = "upper_bound", "point", "lower_bound"  # the gate's drop decision
METRICS = ("accuracy", "top_k_accuracy")

S = TypeVar("S", bound="StageSettings")


class SettingsError(ValueError):
    """A setting has a bad value; the message names the setting, the value and the fix."""


def describe_errors(error: ValidationError, name_of=None) -> str:
    """pydantic's errors as one line per setting: `name = value: what is wrong`."""
    lines: Dict[str, List[str]] = {}
    for e in error.errors():
        # Drop list indexes and the union member tags pydantic adds ("literal[...]", "list[str]").
        loc = [str(p) for p in e["loc"] if isinstance(p, str) and p.isidentifier()]
        message = e["msg"].removeprefix("Value error, ")
        if not loc:  # a rule across several settings: the message names them
            lines.setdefault(message, [])
            continue
        where = name_of(loc) if name_of else ".".join(loc)
        value = e.get("input")
        shown = "" if isinstance(value, dict) or e["type"] == "missing" else f" = {value!r}"
        lines.setdefault(f"{where}{shown}", []).append(message)
    return "; ".join(f"{k}: {' or '.join(v)}" if v else k for k, v in lines.items())


class StageSettings(BaseModel):
    """Base: strict about unknown keys, validated on assignment, JSON in and out."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls: Type[S], text: str) -> S:
        try:
            return cls.model_validate_json(text)
        except ValidationError as e:
            raise SettingsError(f"{cls.__name__}: {describe_errors(e)}") from None

    def with_overrides(self: S, overrides: Optional[str]) -> S:
        """A copy with the fields of a JSON object replaced (validated); '' or None: self."""
        if not overrides or not overrides.strip():
            return self
        try:
            changes = json.loads(overrides)
        except json.JSONDecodeError as e:
            raise SettingsError(f"{type(self).__name__} overrides {overrides!r} are not JSON: {e}") from None
        if not isinstance(changes, dict):
            raise SettingsError(f"{type(self).__name__} overrides must be a JSON object, not {overrides!r}")
        return type(self).build(**{**self.model_dump(), **changes})

    @classmethod
    def coerce(cls: Type[S], value: Any, where: str = "") -> S:
        """`value` as these settings: an instance as it is, a dict validated (a SettingsError
        with one line per bad setting), None as the defaults. where: who takes them, for the
        message (a component's name)."""
        if value is None:
            return cls.build()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls.build(**value)
        raise SettingsError(f"{where + ': ' if where else ''}settings must be a {cls.__name__} or a dict of its "
                            f"fields, not {type(value).__name__}")

    @classmethod
    def build(cls: Type[S], **values: Any) -> S:
        """Like the constructor, but a bad value raises SettingsError with a one-line message."""
        try:
            return cls(**values)
        except ValidationError as e:
            raise SettingsError(f"{cls.__name__}: {describe_errors(e)}") from None


def _check_variants(names: List[str]) -> List[str]:
    unknown = [n for n in names if n not in contracts.ALL_VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}: valid variants are {list(contracts.ALL_VARIANTS)}")
    return names


class ImageDecoding(BaseModel):
    """An input fed from encoded images (PNG or JPEG bytes in one tf.Example feature, the way
    TFX's image examples store them): decoded with `channels`, resized (bilinear) to the
    input's height and width when they differ, then `pixel * scale + offset` as float32. The
    same code runs in training, calibration, the selective search and evaluation
    (components/quantization/data.py); the .tflite takes the decoded, scaled tensor."""

    model_config = ConfigDict(extra="forbid")

    channels: Literal[1, 3] = Field(1, description="1: grayscale, 3: RGB")
    scale: float = Field(1.0 / 255.0, description="multiplies each decoded pixel (0..255)")
    offset: float = Field(0.0, description="added after scaling")


class InputFeatures(BaseModel):
    """Which example feature(s) feed one signature input."""

    model_config = ConfigDict(extra="forbid")

    features: List[str] = Field(default_factory=list, description="one key holding every value, or one scalar key "
                                                                   "per value, concatenated; []: the input's name")
    image: Optional[ImageDecoding] = Field(None, description="the feature holds encoded images: how to decode them")


class ModelContract(StageSettings):
    """How a model from another trainer meets the examples (the stock-TFX pipeline): read by
    the QAT fine-tuner, the quantizer and the evaluator. Shapes, dtypes and names come from the model's signature; this says what a
    signature cannot. Our QATTrainer records its own next to its models, so the built-in path
    needs none; a stock TFX Trainer's model needs at least the label key and, usually, the
    dense signature's name."""

    signature: str = Field("serving_default", min_length=1,
                           description="the SavedModel signature to convert and evaluate: it must take dense "
                                       "tensors (TFX modules often export 'serving_default' parsing tf.Examples: "
                                       "name the dense one)")
    inputs: Dict[str, InputFeatures] = Field(
        default_factory=dict, description="signature input -> {features, image}; an input not listed is fed by "
                                          "the feature of the same name")
    label_key: str = Field("label", min_length=1, description="int64 feature holding the class label")
    num_classes: Optional[int] = Field(None, ge=2, description="None: the output's size (2 for one sigmoid unit)")
    output: str = Field("", description="the signature output holding the class scores; '': its only output")
    output_kind: Literal["probabilities", "logits"] = Field(
        PROBABILITIES, description="probabilities (softmax or sigmoid applied) or logits; metrics use the argmax "
                                   "either way, logits are turned into probabilities where scores are compared")

    @classmethod
    def decode(cls, text: Optional[str]) -> Optional["ModelContract"]:
        """An execution parameter: None or '' (not given) -> None."""
        return cls.from_json(text) if text else None

    @classmethod
    def of_spec(cls, spec: ModelSpec) -> "ModelContract":
        """The contract that reads `spec` back from a model saved with its signature."""
        def image(i):
            return ImageDecoding(**dataclasses.asdict(i.image)) if i.image else None

        return cls(signature=spec.signature, label_key=spec.label_key, num_classes=spec.num_classes,
                   output=spec.output_name, output_kind=spec.output_kind,
                   inputs={i.name: InputFeatures(features=i.features, image=image(i)) for i in spec.inputs})

    @model_validator(mode="after")
    def _label_not_input(self) -> "ModelContract":
        for name, mapping in self.inputs.items():
            if self.label_key in mapping.features or (not mapping.features and name == self.label_key):
                raise ValueError(f"label_key {self.label_key!r} also feeds input {name!r}")
        return self


class TrainSettings(StageSettings):
    """QATTrainer: the model contract, the model, and both training phases."""

    feature_keys: List[str] = Field(
        default_factory=lambda: list(DIGITS_PIXEL_KEYS), min_length=1,
        description="example feature(s) forming the model input: one key holding every value, "
                    "or one scalar key per value, concatenated in this order")
    input_shape: List[int] = Field(default_factory=lambda: [8, 8, 1], min_length=1,
                                   description="model input shape without the batch dimension")
    label_key: str = Field("label", min_length=1, description="int64 feature holding the class label")
    num_classes: int = Field(10, ge=2, description="number of classes (labels are 0..num_classes-1)")
    model: str = Field("digits_cnn", description=f"built-in model: one of {list(contracts.BUILTIN_MODELS)}")
    module_file: str = Field("", description="a user module defining build_model(); overrides `model`")
    model_kwargs: Dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the builder")
    epochs: int = Field(10, ge=1, description="float training epochs")
    steps_per_epoch: int = Field(0, ge=0, description="0: one pass over the train split per epoch")
    qat_epochs: int = Field(2, ge=1, description="quantization-aware fine-tuning epochs")
    qat_steps_per_epoch: int = Field(0, ge=0, description="0: one pass per QAT epoch")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    qat_learning_rate: float = Field(1e-4, gt=0)
    qat_range_batches: int = Field(8, ge=1, description="train batches whose float activations set the QAT "
                                                        "model's starting ranges (as calibration does)")
    seed: int = Field(42, description="seeds training (and calibration sampling unless set there)")
    input_name: str = Field("image", min_length=1, description="input name in the serving signature")
    output_name: str = Field("probabilities", min_length=1, description="output name in the serving signature")
    image: Optional[ImageDecoding] = Field(
        None, description="feature_keys names one feature holding encoded PNG/JPEG images: how to decode them")

    @model_validator(mode="after")
    def _contract(self) -> "TrainSettings":
        # The model contract's rules (shape, keys, label) live in ModelSpec, which also
        # checks the spec read from a SavedModel's signature.
        self.spec()
        if not self.module_file and self.model not in contracts.BUILTIN_MODELS:
            raise ValueError(
                f"model {self.model!r} is not a built-in model: use one of {list(contracts.BUILTIN_MODELS)} "
                "or set module_file")
        return self

    def spec(self, feature_dtypes: Optional[Dict[str, str]] = None) -> ModelSpec:
        """The spec of the model these settings build (one input, softmax output)."""
        image = ImageSpec(**self.image.model_dump()) if self.image else None
        return ModelSpec.single(self.feature_keys, self.input_shape, self.label_key, self.num_classes,
                                feature_dtypes=feature_dtypes, input_name=self.input_name,
                                output_name=self.output_name, image=image)


class CalibrationSettings(StageSettings):
    """RepresentativeDatasetGen: the seeded calibration sample."""

    source_split: str = Field(contracts.TRAIN_SPLIT, min_length=1, description="the split to sample from")
    num_samples: int = Field(200, ge=1, description="examples in the calibration sample")
    strategy: Literal["uniform", "stratified"] = Field(
        "stratified", description="uniform, or stratified by label (per-class quotas)")
    label_key: str = Field("", description="label feature for stratified sampling; "
                                           "'' in the pipeline: the trainer's label_key")
    seed: Optional[int] = Field(None, description="None in the pipeline: the trainer's seed; standalone: 0")

    def check_complete(self) -> None:
        """What a stage needs that the pipeline fills in: a label key when stratified."""
        if self.strategy == "stratified" and not self.label_key:
            raise SettingsError("CalibrationSettings: strategy 'stratified' needs label_key, the class label feature")


class QuantizeSettings(StageSettings):
    """PostTrainingQuantizer: which variants, and the selective_integer search."""

    variants: List[str] = Field(default_factory=list, description="variants to build; empty: all the inputs allow")
    integer_io_type: Literal["int8", "uint8"] = Field("int8", description="I/O type of the integer-only variants")
    max_calibration_samples: Optional[int] = Field(None, ge=1, description="None: the whole calibration sample")
    validation_split: str = Field(contracts.VALIDATION_SPLIT, min_length=1,
                                  description="split the selective search validates on: held out from training, "
                                              "never the gate's split")
    validation_samples: int = Field(1000, ge=1, description="examples the selective search validates on")
    search_max_drop: Optional[float] = Field(
        None, ge=0, description="accuracy drop the selective search accepts; None: the gate's max_accuracy_drop")
    max_float_layers: int = Field(8, ge=1, description="most layers the selective search may keep float")
    max_search_steps: int = Field(8, ge=1, description="most conversions the selective search may spend")
    selective_integer_io: bool = Field(False, description="integer I/O for selective_integer (float I/O otherwise)")

    @field_validator("variants")
    @classmethod
    def _variants(cls, v: List[str]) -> List[str]:
        return _check_variants(v)

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
        DEFAULT_MAX_ACCURACY_DROP, ge=0, description="bound on float - variant (0.01 = 1 pp); None: off")
    drop_decision: Literal["upper_bound", "point", "lower_bound"] = Field(
        UPPER_BOUND, description="upper_bound: pass only when the drop's upper confidence bound is within the "
                                 "bound; lower_bound: fail only when its lower bound exceeds it; point: the "
                                 "observed drop")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="one-sided confidence of the drop's bounds "
                                                              "(0.95: the two-sided 90% paired interval)")
    max_relative_drop: Optional[float] = Field(None, ge=0, le=1, description="bound on (float - variant) / float")
    max_model_bytes: Optional[int] = Field(None, ge=1, description="bound on the .tflite file size")
    max_latency_ms: Optional[float] = Field(None, gt=0, description="bound on the median single-example latency")
    min_accuracy: Optional[float] = Field(None, ge=0, le=1, description="floor on the variant's metric")
    min_margin_over_majority: Optional[float] = Field(
        0.02, ge=0, le=1, description="the float model and a variant must beat the majority-class rate of the eval "
                                      "labels (top-k: the k largest classes) by this much; None: off")
    allow_float32: bool = Field(False, description="whether the unquantized float32 variant may be selected")
    min_integer_compute_fraction: float = Field(
        0.8, ge=0, le=1, description="a mixed variant (selective_integer, qat_mixed) doing a smaller share of its "
                                     "arithmetic (multiply-accumulates; elements of elementwise ops) in integer "
                                     "ops counts as float32 for the gate")
    selection: Union[Literal["smallest", "fastest"], List[str]] = Field(
        SMALLEST, description="smallest, fastest, or a list of variant names in order of preference")
    metric: Literal["accuracy", "top_k_accuracy"] = Field("accuracy", description="the metric the gate judges")
    top_k: int = Field(5, ge=1, description="k of top_k_accuracy")
    latency_tie_tolerance: float = Field(
        0.05, ge=0, le=1, description="fastest: variants within this share of the fastest median, or within the "
                                      "measured spread (IQR), are tied and the smallest of them wins")
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
    model_name: str = Field("digits", min_length=1, description="the model's folder in the registry")
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
        if not self.destination:
            raise SettingsError("PushSettings: destination is empty: name the registry's base folder or URI")
