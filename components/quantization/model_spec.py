"""ModelSpec: what a model consumes and predicts, read from the model itself.

The SavedModel's signature (default `serving_default`) gives the inputs (names, shapes,
dtypes) and the output; a `ModelContract` (tfx_quantization.model_contract) adds what a
signature cannot say: which example feature(s) feed each input (same name by default), how
an encoded image is decoded, the label key, and whether the output is probabilities or
logits. Any SavedModel works: TFX's stock Trainer output (`Format-Serving`) as well as ours.
The stage that first produces a model records the resolved contract on its artifacts and
next to the model (`model_contract.json`); `ModelSpec.read` takes the contract a stage
resolved (its parameter, else its input artifact's), else reads that file, else names the
fix. `ModelSpec.of_contract` is the spec of a model still to be built (the built-in trainer).

No TensorFlow import at module level: the configuration validates contracts with it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Dict, List, Optional

from tfx_quantization import fsutil
from tfx_quantization.contracts import MODEL_CONTRACT_FILE
from tfx_quantization.model_contract import (
    BINARY, CLASSIFIERS, DEFAULT_OUTPUT_NAME, LOGITS, MULTICLASS, MULTILABEL, NO_LABELS, PROBABILITIES, REGRESSION,
    ImageDecoding, ModelContract,
)

STORAGE_DTYPES = ("int64", "float32", "bytes")  # how a feature is stored in a tf.Example
INPUT_DTYPES = ("float32", "int64", "int32")  # what a signature input may take
# The signature's dtype enum values (tensorflow/core/framework/types.proto), read without TensorFlow.
_DT_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 7: "string", 9: "int64", 10: "bool", 19: "float16"}


@dataclasses.dataclass
class InputSpec:
    name: str  # the signature's input name (and the TFLite signature input)
    features: List[str]  # one key holding every value, or one scalar key per value, concatenated
    shape: List[int]  # without the batch dimension
    dtype: str = "float32"  # the signature input's dtype
    feature_dtypes: Dict[str, str] = dataclasses.field(default_factory=dict)  # storage dtype per key
    image: Optional[ImageDecoding] = None  # the feature holds encoded images: how to decode them

    def __post_init__(self):
        self.features = list(self.features)
        self.shape = [int(d) for d in self.shape]
        if isinstance(self.image, dict):
            self.image = ImageDecoding(**self.image)

    @property
    def size(self) -> int:
        return int(math.prod(self.shape))

    @property
    def values_per_key(self) -> int:
        return self.size if len(self.features) == 1 else 1

    def validate(self) -> None:
        where = f"input {self.name!r}"
        if not self.features:
            raise ValueError(f"{where}: no example feature feeds it: name one in the contract's inputs")
        if not self.shape or any(d <= 0 for d in self.shape):
            raise ValueError(f"{where}: shape {self.shape} must be a list of positive sizes, e.g. [8, 8, 1]")
        if self.dtype not in INPUT_DTYPES:
            raise ValueError(f"{where} takes {self.dtype}; supported: {list(INPUT_DTYPES)}")
        if self.image is not None:
            if len(self.features) != 1:
                raise ValueError(f"{where}: an image input is fed by one feature holding the encoded image, "
                                 f"not {len(self.features)}")
            if len(self.shape) != 3 or self.shape[-1] != self.image.channels:
                raise ValueError(f"{where}: an image input must be [height, width, {self.image.channels}] "
                                 f"(channels={self.image.channels}), the model takes {self.shape}")
        elif len(self.features) not in (1, self.size):
            raise ValueError(
                f"{where}: {len(self.features)} feature keys cannot fill shape {self.shape} ({self.size} values): "
                f"give one key holding {self.size} values, or {self.size} scalar keys")
        for dtype in self.feature_dtypes.values():
            if dtype not in STORAGE_DTYPES:
                raise ValueError(f"{where}: storage dtype {dtype!r}: use one of {STORAGE_DTYPES}")


@dataclasses.dataclass
class OutputSpec:
    """A secondary output of a multi-output model (ModelContract.extra_outputs, resolved
    against the signature): ModelSpec's output fields for that output."""

    output_name: str
    task: str
    label_key: str
    num_classes: int
    output_kind: str = PROBABILITIES
    output_units: int = 0
    threshold: float = 0.5
    label_dtype: str = ""


OUTPUT_FIELDS = tuple(f.name for f in dataclasses.fields(OutputSpec))


@dataclasses.dataclass
class ModelSpec:
    inputs: List[InputSpec]
    label_key: str
    num_classes: int
    signature: str = "serving_default"
    output_name: str = DEFAULT_OUTPUT_NAME
    output_kind: str = PROBABILITIES  # probabilities (softmax/sigmoid applied) or logits
    output_units: int = 0  # the output's last dimension; 1: a binary classifier's one score
    task: str = MULTICLASS  # model_contract.TASK_NAMES
    threshold: float = 0.5  # binary and multilabel: predicted positive at or above this probability
    label_dtype: str = ""  # the label's storage dtype (data.check_examples fills it); '': the task's default
    # A multi-output model's other outputs (contract.extra_outputs): measured beside this
    # one, which is the primary output the gate judges. output_specs() gives one spec per output.
    extra_outputs: List[OutputSpec] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.inputs = [i if isinstance(i, InputSpec) else InputSpec(**i) for i in self.inputs]
        self.extra_outputs = [o if isinstance(o, OutputSpec) else OutputSpec(**o) for o in self.extra_outputs]
        if not self.output_units:
            self.output_units = self.num_classes
        self.validate()
        for o in self.extra_outputs:
            self.of_output(o)  # each output's spec validates its own fields

    def of_output(self, output: OutputSpec) -> "ModelSpec":
        """The single-output spec of `output` (same inputs and signature)."""
        return dataclasses.replace(self, extra_outputs=[], **{k: getattr(output, k) for k in OUTPUT_FIELDS})

    def output_specs(self) -> List["ModelSpec"]:
        """One single-output spec per output, the primary first: what measuring every output
        loops over (each has its task's scores, label and checks)."""
        return [dataclasses.replace(self, extra_outputs=[])] + [self.of_output(o) for o in self.extra_outputs]

    def with_outputs(self, specs: List["ModelSpec"]) -> "ModelSpec":
        """This spec with each output's fields taken from `specs` (output_specs' order; e.g.
        the label storage dtypes data.check_examples found)."""
        primary, *extra = specs
        return dataclasses.replace(self, label_dtype=primary.label_dtype, extra_outputs=[
            OutputSpec(**{k: getattr(o, k) for k in OUTPUT_FIELDS}) for o in extra])

    @property
    def output_names(self) -> List[str]:
        return [self.output_name] + [o.output_name for o in self.extra_outputs]

    @classmethod
    def single(cls, feature_keys: List[str], input_shape: List[int], label_key: str, num_classes: int,
               feature_dtypes: Optional[Dict[str, str]] = None, input_name: str = "image",
               output_name: str = DEFAULT_OUTPUT_NAME, image: Optional[ImageDecoding] = None,
               **kw) -> "ModelSpec":
        """A one-input model fed by `feature_keys` (the built-in models)."""
        return cls([InputSpec(input_name, feature_keys, input_shape, feature_dtypes=dict(feature_dtypes or {}),
                              image=image)], label_key, num_classes, output_name=output_name, **kw)

    @classmethod
    def of_contract(cls, contract: ModelContract, feature_dtypes: Optional[Dict[str, str]] = None) -> "ModelSpec":
        """The spec of a model still to be built from `contract` (the built-in trainer): its
        one input is the contract's one `inputs` entry, which names the input, its features
        (default: the input's name) and its shape; the output is `contract.output`, or
        DEFAULT_OUTPUT_NAME. A label-free model (task none) is built to reconstruct its input
        (an autoencoder: the output has the input's size, the training target is the input).
        A ValueError names the contract setting to fix."""
        example = '{"image": {"features": ["pixel_00", ...], "shape": [8, 8, 1]}}'
        if len(contract.inputs) != 1:
            named = f"names {len(contract.inputs)} inputs {sorted(contract.inputs)}" if contract.inputs else "is empty"
            raise ValueError(f"contract.inputs {named}: the built-in trainer builds a one-input model from one entry "
                             f"(the input's name, its features and shape), e.g. {example}")
        [(name, mapping)] = contract.inputs.items()
        if not mapping.shape:
            raise ValueError(f"contract.inputs.{name}.shape is not set: the built-in trainer needs the input's shape "
                             f"without the batch dimension, e.g. {example}")
        size = math.prod(mapping.shape)
        if contract.task == NO_LABELS and contract.num_classes not in (None, size):
            raise ValueError(f"contract.num_classes is {contract.num_classes} with task 'none': without labels the "
                             f"built-in trainer trains the model to reconstruct its input (an autoencoder), so the "
                             f"output has the input's {size} values: leave num_classes unset, or train the model "
                             "yourself (a stock TFX Trainer) and give its contract to QATFineTuner or the evaluator")
        num_classes = contract.num_classes or {REGRESSION: 1, NO_LABELS: size}.get(contract.task)
        if num_classes is None:
            raise ValueError("contract.num_classes is not set: the built-in trainer needs the output's size (the "
                             "number of classes, labels 0..num_classes-1; multilabel: the number of labels)")
        extra = []
        for o in contract.extra_outputs:
            units = o.num_classes or {REGRESSION: 1}.get(o.task)
            if units is None:
                raise ValueError(f"contract.extra_outputs: output {o.output!r} has no num_classes: the built-in trainer "
                                 "needs each output's size")
            extra.append(_output_spec(o, units, 0))
        return cls.single(mapping.features or [name], mapping.shape, contract.label_key, num_classes,
                          feature_dtypes=feature_dtypes, input_name=name,
                          output_name=contract.output or DEFAULT_OUTPUT_NAME, image=mapping.image,
                          signature=contract.signature, output_kind=contract.output_kind, task=contract.task,
                          threshold=contract.threshold, extra_outputs=extra)

    def validate(self) -> None:
        if not self.inputs:
            raise ValueError("the model has no inputs")
        for i in self.inputs:
            i.validate()
            if self.has_labels and self.label_key in i.features:
                raise ValueError(f"label_key {self.label_key!r} also feeds input {i.name!r}")
        if self.task in CLASSIFIERS and self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes}: a classifier needs at least 2 classes (one real "
                             "value: set contract.task to regression)")
        if self.task == BINARY and self.num_classes != 2:
            raise ValueError(f"task binary with num_classes={self.num_classes}: a binary classifier has 2 classes")
        if self.output_kind not in (PROBABILITIES, LOGITS):
            raise ValueError(f"output_kind {self.output_kind!r}: use {PROBABILITIES!r} or {LOGITS!r}")
        allowed = (1, self.num_classes) if self.task in CLASSIFIERS else (self.num_classes,)
        if self.task != NO_LABELS and self.output_units not in allowed:
            what = "classes" if self.task in CLASSIFIERS else ("labels" if self.task == MULTILABEL else "targets")
            raise ValueError(f"output {self.output_name!r} has {self.output_units} units for {self.num_classes} "
                             f"{what}: set num_classes to the output's size"
                             + (" (or 2 for one sigmoid unit)" if self.task in CLASSIFIERS else ""))

    @property
    def has_labels(self) -> bool:
        """Whether the task reads a label from the examples (every task but none)."""
        return self.task != NO_LABELS

    @property
    def is_classifier(self) -> bool:
        """multiclass or binary: one class label, argmax (or threshold) decisions."""
        return self.task in CLASSIFIERS

    def scores(self, outputs):
        """What the task's metrics compare, from the model's raw outputs [B, units] (float32):
        classifiers: class probabilities [B, num_classes] (softmax of logits; one sigmoid unit
        (or its logit) p becomes [1 - p, p]); multilabel: per-label probabilities [B, labels]
        (sigmoid of logits); regression and none: the raw values."""
        import numpy as np

        y = np.asarray(outputs, dtype=np.float32)
        if self.task in (REGRESSION, NO_LABELS):
            return y
        if self.task == MULTILABEL:
            return 1.0 / (1.0 + np.exp(-y)) if self.output_kind == LOGITS else y
        if self.output_units == 1:
            p = y[:, :1]
            if self.output_kind == LOGITS:
                p = 1.0 / (1.0 + np.exp(-p))
            return np.concatenate([1.0 - p, p], axis=-1)
        if self.output_kind == LOGITS:
            shifted = np.exp(y - np.max(y, axis=-1, keepdims=True))
            return shifted / np.sum(shifted, axis=-1, keepdims=True)
        return y

    # ---- single-input conveniences (the built-in models, benchmarks) ----
    @property
    def input_names(self) -> List[str]:
        return [i.name for i in self.inputs]

    @property
    def feature_keys(self) -> List[str]:
        return [k for i in self.inputs for k in i.features]

    def input(self, name: Optional[str] = None) -> InputSpec:
        if name is None:
            if len(self.inputs) != 1:
                raise ValueError(f"the model has {len(self.inputs)} inputs: name one")
            return self.inputs[0]
        return next(i for i in self.inputs if i.name == name)

    @property
    def input_shape(self) -> List[int]:
        return self.input().shape

    @property
    def input_name(self) -> str:
        return self.input().name

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, default=ImageDecoding.model_dump)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, model_dir: str, contract: Optional[ModelContract] = None) -> "ModelSpec":
        """The spec of the SavedModel in `model_dir`: its signature under `contract` (what the
        stage resolved: its parameter, else its input artifact's), else under the contract
        recorded next to the model; a ValueError naming the fix when there is neither."""
        if contract is None:
            contract = read_contract_file(model_dir)
        if contract is None:
            raise ValueError(
                f"no model contract for the model in {model_dir}: it was not produced by QATTrainer or QATFineTuner "
                "(which record one); pass contract=ModelContract(...) (label_key, inputs, signature, ...) to the "
                "first of our stages that reads it (in the pipeline: the `contract` section)")
        return from_signature(read_signature(model_dir, contract.signature), contract)


def read_contract_file(model_dir: str) -> Optional[ModelContract]:
    """The contract recorded next to the SavedModel in `model_dir` (model_contract.json), or None."""
    path = fsutil.join(model_dir, MODEL_CONTRACT_FILE)
    return ModelContract.from_json(fsutil.read_text(path)) if fsutil.exists(path) else None


def write_contract_file(model_dir: str, contract: ModelContract) -> None:
    """Records `contract` next to the SavedModel in `model_dir` (model_contract.json)."""
    fsutil.write_bytes_atomic(fsutil.join(model_dir, MODEL_CONTRACT_FILE), contract.to_json().encode())


def read_signature(model_dir: str, name: str) -> Dict[str, Any]:
    """{'inputs': {name: (dtype, shape)}, 'outputs': {...}} of one signature of the SavedModel
    in `model_dir`, read from saved_model.pb (no graph is loaded); a ValueError names what is
    missing and the fix."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = fsutil.join(model_dir, "saved_model.pb")
    if not fsutil.exists(path):
        raise ValueError(f"{model_dir} holds no SavedModel (no saved_model.pb): point at the model's serving "
                         "folder (TFX's Trainer writes it to <model>/Format-Serving)")
    try:
        proto = saved_model_pb2.SavedModel.FromString(fsutil.read_bytes(path))
    except Exception as e:  # noqa: BLE001 - a DecodeError or worse: the file is not a SavedModel
        proto, error = None, f"{type(e).__name__}: {str(e)[:200]}"
    if proto is None or not proto.meta_graphs:
        raise ValueError(f"the SavedModel at {model_dir} cannot be loaded ({error if proto is None else 'no graph'}); "
                         "re-run the Trainer to produce it again")
    signatures = {k: v for mg in proto.meta_graphs for k, v in mg.signature_def.items() if not k.startswith("__")}
    if name not in signatures:
        raise ValueError(f"the SavedModel in {model_dir} has no signature {name!r} (it has {sorted(signatures)}): "
                         "set contract.signature to the dense one TFLite should convert")

    def tensors(infos) -> Dict[str, tuple]:
        return {k: (_DT_NAMES.get(t.dtype, f"dtype {t.dtype}"),
                    None if t.tensor_shape.unknown_rank else [d.size for d in t.tensor_shape.dim])
                for k, t in infos.items()}

    return {"inputs": tensors(signatures[name].inputs), "outputs": tensors(signatures[name].outputs)}


def from_signature(signature: Dict[str, Any], contract: ModelContract) -> ModelSpec:
    """The spec of a signature under a contract; a ValueError names the input and the fix."""
    sig_inputs, outputs, where = signature["inputs"], signature["outputs"], f"signature {contract.signature!r}"
    unknown = sorted(set(contract.inputs) - set(sig_inputs))
    if unknown:
        raise ValueError(f"contract.inputs names {unknown}, which {where} does not take (it takes "
                         f"{sorted(sig_inputs)})")
    inputs = []
    for name, (dtype, shape) in sorted(sig_inputs.items()):
        if dtype == "string":
            raise ValueError(
                f"{where} input {name!r} takes strings (serialized tf.Examples, as TFX's serving signature does): "
                "TFLite cannot convert example parsing; export a signature taking the dense features (see README, "
                "'Your own TFX pipeline') and set contract.signature to it")
        if dtype not in INPUT_DTYPES:
            raise ValueError(f"{where} input {name!r} takes {dtype}; supported: {list(INPUT_DTYPES)}")
        if shape is None or len(shape) < 2 or any(d <= 0 for d in shape[1:]):
            raise ValueError(f"{where} input {name!r} has shape {shape}: every dimension after the batch must be "
                             "fixed (export the signature with a fixed-size TensorSpec, e.g. [None, 8, 8, 1])")
        mapping = contract.inputs.get(name)
        if mapping and mapping.shape and list(mapping.shape) != list(shape[1:]):
            raise ValueError(f"contract.inputs.{name}.shape is {list(mapping.shape)}, but {where} input {name!r} takes "
                             f"{list(shape[1:])}: fix the shape or leave it out (the signature gives it)")
        features = list(mapping.features) if mapping and mapping.features else [name]
        image = mapping.image if mapping else None
        inputs.append(InputSpec(name, features, shape[1:], dtype=dtype, image=image))
    if contract.output:
        if contract.output not in outputs:
            raise ValueError(f"contract.output {contract.output!r} is not an output of {where} "
                             f"(it has {sorted(outputs)})")
        output = contract.output
    elif len(outputs) == 1:
        output = next(iter(outputs))
    else:
        raise ValueError(f"{where} has {len(outputs)} outputs {sorted(outputs)}: set contract.output to the "
                         "class scores")
    unknown = [o.output for o in contract.extra_outputs if o.output not in outputs]
    if unknown:
        raise ValueError(f"contract.extra_outputs names {unknown}, which {where} does not return (it returns "
                         f"{sorted(outputs)})")
    units, num_classes = _output_size(where, output, outputs[output], contract.task, contract.num_classes)
    extra = [_output_spec(o, *_output_size(where, o.output, outputs[o.output], o.task, o.num_classes)[::-1])
             for o in contract.extra_outputs]
    return ModelSpec(inputs, contract.label_key, num_classes, signature=contract.signature, output_name=output,
                     output_kind=contract.output_kind, output_units=units if units > 0 else num_classes,
                     task=contract.task, threshold=contract.threshold, extra_outputs=extra)


def _output_size(where: str, output: str, dtype_shape: tuple, task: str, declared: Optional[int]) -> tuple:
    """(units, num_classes) of a signature output for `task` (units 0: not a [batch, units]
    output, which only a label-free task takes); a ValueError names the output and the fix."""
    dtype, shape = dtype_shape
    label_free = task == NO_LABELS  # fidelity compares any shape, flattened per example
    if dtype != "float32" or shape is None or len(shape) < 2 or (len(shape) != 2 and not label_free):
        raise ValueError(f"{where} output {output!r} is {dtype} {shape}: task {task} needs float32 "
                         "[batch, units] (classes, labels or targets)"
                         + ("" if label_free else "; other shapes are judged by fidelity alone (task: none)"))
    units = shape[1] if len(shape) == 2 else 0
    sized = (2 if units == 1 and task in CLASSIFIERS else units) if units > 0 else None
    num_classes = declared or sized or (1 if label_free else None)
    if num_classes is None or num_classes <= 0:
        raise ValueError(f"{where} output {output!r} has no fixed size: set its num_classes in the contract")
    return units, num_classes


def _output_spec(o, num_classes: int, units: int) -> OutputSpec:
    """The OutputSpec of a contract's extra output (model_contract.OutputTask)."""
    return OutputSpec(o.output, o.task, o.label_key, num_classes, output_kind=o.output_kind,
                      output_units=units if units > 0 else num_classes, threshold=o.threshold)
