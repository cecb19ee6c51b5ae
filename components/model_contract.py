"""The model contract: how a model meets the examples. Defined once, here, and travelling
with the model.

A SavedModel's signature says the names, shapes and dtypes of its inputs and outputs; the
contract says what a signature cannot: which example feature(s) feed each input (and how an
encoded image is decoded), the label key, the class count, which output the gate judges,
its task (multiclass, binary, multilabel, regression or none: the task table in
quantization/metrics.py names each task's metrics, intervals and sanity bound) and whether
its scores are probabilities or logits.

Where a stage gets it (tfx_quantization.tfx_utils.resolve_contract, ModelSpec.read):
  1. the stage's explicit `contract` parameter, when given;
  2. else the contract recorded as a custom property (contracts.MODEL_CONTRACT) on its input
     Model artifact: the first stage that produces a model (QATTrainer; after a stock TFX
     Trainer, QATFineTuner, which is given the contract) records the resolved contract on
     its outputs, and PostTrainingQuantizer records it again on `quantized_models`;
  3. else the `model_contract.json` written next to the SavedModel by the same stages;
  4. else a one-line error naming the fix.

Below the settings: this module imports settings_base only (no settings, no TensorFlow), and
quantization/model_spec.py, which resolves a contract against a signature, imports it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationInfo, field_validator, model_validator

from tfx_quantization.settings_base import StageSettings

PROBABILITIES, LOGITS = "probabilities", "logits"
# The task of the model's output (the table of each task's metrics, intervals and sanity
# bounds: tfx_quantization.quantization.metrics.TASKS).
MULTICLASS, BINARY, MULTILABEL, REGRESSION, NO_LABELS = "multiclass", "binary", "multilabel", "regression", "none"
TASK_NAMES = (MULTICLASS, BINARY, MULTILABEL, REGRESSION, NO_LABELS)
CLASSIFIERS = (MULTICLASS, BINARY)  # one class label per example, argmax decisions
# The output name the built-in trainer gives its model's class scores when contract.output is ''.
DEFAULT_OUTPUT_NAME = "probabilities"


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
    """Which example feature(s) feed one signature input, and (for a model still to be built)
    its shape."""

    model_config = ConfigDict(extra="forbid")

    features: List[str] = Field(default_factory=list, description="one key holding every value, or one scalar key "
                                                                   "per value, concatenated; []: the input's name")
    shape: Optional[List[PositiveInt]] = Field(
        None, min_length=1, description="the input's shape without the batch dimension, e.g. [8, 8, 1]: needed by "
                                        "the built-in trainer to build a model; otherwise it comes from the "
                                        "signature (and, when given, must match it)")
    image: Optional[ImageDecoding] = Field(None, description="the feature holds encoded images: how to decode them")


TaskName = Literal["multiclass", "binary", "multilabel", "regression", "none"]


class OutputTask(BaseModel):
    """A secondary output of a multi-output model, measured beside the primary one (the
    contract's own `output`, which the gate judges): its task, label and size. Every variant
    gets its task's metrics on it (when it has a label) and its fidelity to the float model."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field(..., min_length=1, description="the signature output's name")
    task: TaskName = Field(REGRESSION, description="what it predicts (as the contract's task)")
    label_key: str = Field("", description="its label feature; '' with task none (no label)")
    num_classes: Optional[int] = Field(None, ge=1, description="its size: classes, labels or targets; None: read "
                                                               "from the output (the built-in trainer: regression 1)")
    output_kind: Literal["probabilities", "logits"] = Field(PROBABILITIES, description="as the contract's")
    threshold: float = Field(0.5, gt=0, lt=1, description="as the contract's (binary and multilabel)")

    @model_validator(mode="after")
    def _label_fits_the_task(self) -> "OutputTask":
        if self.task != NO_LABELS and not self.label_key:
            raise ValueError(f"extra output {self.output!r} (task {self.task}) has no label_key: name its label "
                             "feature, or set task: none to measure its fidelity alone")
        if self.task == MULTICLASS and self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"extra output {self.output!r}: a multiclass output has num_classes >= 2")
        if self.task == BINARY and self.num_classes not in (None, 2):
            raise ValueError(f"extra output {self.output!r}: a binary output has 2 classes")
        return self


class ModelContract(StageSettings):
    """How a model meets the examples: given once (to QATTrainer, or to QATFineTuner after a
    stock TFX Trainer), recorded on the model artifacts, read by every later stage. Shapes,
    dtypes and names come from the model's signature; this says what a signature cannot."""

    signature: str = Field("serving_default", min_length=1,
                           description="the SavedModel signature to convert and evaluate: it must take dense "
                                       "tensors (TFX modules often export 'serving_default' parsing tf.Examples: "
                                       "name the dense one)")
    inputs: Dict[str, InputFeatures] = Field(
        default_factory=dict, description="signature input -> {features, shape, image}; an input not listed is fed "
                                          "by the feature of the same name; the built-in trainer builds one input "
                                          "from the one entry here (features and shape)")
    task: TaskName = Field(
        MULTICLASS, description="what `output` predicts: multiclass (one class of num_classes, softmax), binary (one "
                                "sigmoid unit or two classes: judged by ROC AUC), multilabel (num_classes independent "
                                "sigmoids, a multi-hot int64 label), regression (num_classes real values, an int or "
                                "float label of that many values), none (no label: judged by fidelity to the float "
                                "model alone; the built-in trainer trains it to reconstruct its input)")
    label_key: str = Field("label", min_length=1, description="the label feature: an int64 class (0..classes-1), a "
                                                              "multi-hot int64 list (multilabel) or real value(s) "
                                                              "(regression); unused with task none")
    num_classes: Optional[int] = Field(None, ge=1, description="the output's size: classes (>= 2; binary: 2), labels "
                                                               "(multilabel) or targets (regression); None: read "
                                                               "from the output (2 for one sigmoid unit); the "
                                                               "built-in trainer needs it (regression: default 1; "
                                                               "none: the input's size)")
    output: str = Field("", description=f"the signature output the task judges; '': its only output (the "
                                        f"built-in trainer names it {DEFAULT_OUTPUT_NAME!r})")
    output_kind: Literal["probabilities", "logits"] = Field(
        PROBABILITIES, description="probabilities (softmax or sigmoid applied) or logits; metrics use the argmax "
                                   "either way, logits are turned into probabilities where scores are compared; "
                                   "ignored for regression and none (the raw values are compared)")
    threshold: float = Field(0.5, gt=0, lt=1, description="binary and multilabel: the probability at or above "
                                                          "which an example is predicted positive")
    extra_outputs: List[OutputTask] = Field(
        default_factory=list, description="a multi-output model's other outputs, each with its task, label_key and "
                                          "num_classes (e.g. [{output: ink, task: regression, label_key: ink}]): "
                                          "measured for every variant (task metrics and fidelity per output); the "
                                          "gate judges `output`, the primary one")

    @classmethod
    def of_spec(cls, spec: Any) -> "ModelContract":
        """The resolved contract of a model from its ModelSpec (quantization/model_spec.py;
        not annotated: that module imports this one): every signature input with its features
        and shape, the output's name and the class count, as ModelSpec.read found them.
        Reading the model back with it gives `spec` again: what a stage records."""
        return cls(signature=spec.signature, label_key=spec.label_key, num_classes=spec.num_classes,
                   output=spec.output_name, output_kind=spec.output_kind, task=spec.task, threshold=spec.threshold,
                   inputs={i.name: InputFeatures(features=i.features, shape=i.shape, image=i.image)
                           for i in spec.inputs},
                   extra_outputs=[OutputTask(output=o.output_name, task=o.task, label_key=o.label_key if o.has_labels
                                             else "", num_classes=o.num_classes, output_kind=o.output_kind,
                                             threshold=o.threshold) for o in spec.output_specs()[1:]])

    @property
    def has_labels(self) -> bool:
        """Whether the task reads a label (every task but none)."""
        return self.task != NO_LABELS

    @model_validator(mode="after")
    def _label_not_input(self) -> "ModelContract":
        labels = ([self.label_key] if self.has_labels else []) + [o.label_key for o in self.extra_outputs if o.label_key]
        for name, mapping in self.inputs.items():
            for label in labels:
                if label in mapping.features or (not mapping.features and name == label):
                    raise ValueError(f"label_key {label!r} also feeds input {name!r}")
        names = [self.output] + [o.output for o in self.extra_outputs]
        repeated = sorted({n for n in names if names.count(n) > 1 and n})
        if repeated:
            raise ValueError(f"output(s) {repeated} named twice in output / extra_outputs: name each output once")
        if self.extra_outputs and not self.output:
            raise ValueError("extra_outputs is set but output is not: name the primary output (the one the gate "
                             "judges) in contract.output")
        return self

    @field_validator("num_classes")
    @classmethod
    def _classes_fit_the_task(cls, n: Optional[int], info: ValidationInfo) -> Optional[int]:
        """Reported on num_classes (`task` is declared before it, so it is known here)."""
        task = info.data.get("task", MULTICLASS)
        if n is not None and task == MULTICLASS and n < 2:
            raise ValueError("Input should be greater than or equal to 2 for a multiclass classifier (one "
                             "real-valued output: set task: regression; one sigmoid unit: task: binary)")
        if n is not None and task == BINARY and n != 2:
            raise ValueError("a binary classifier has 2 classes (one sigmoid unit or two scores); more classes: task: "
                             "multiclass, independent labels: task: multilabel")
        return n
