"""ModelSpec: what a model consumes and predicts, written as JSON next to every model.

Downstream stages (calibration, quantizer, evaluator, pusher) read this file instead of
guessing feature names, shapes, dtypes or the class count.
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Dict, List

from components import fsutil
from components.contracts import MODEL_SPEC_FILE

DTYPES = ("int64", "float32")


@dataclasses.dataclass
class ModelSpec:
    # Example feature(s) that form the model input. One key holding prod(input_shape)
    # values, or one scalar key per input element (e.g. the 64 digits pixel columns),
    # concatenated in the order given.
    feature_keys: List[str]
    # The model input shape without the batch dimension, e.g. [8, 8, 1].
    input_shape: List[int]
    label_key: str
    num_classes: int
    # Storage dtype of the feature(s) in the tf.Examples ('int64' or 'float32'); the model
    # always receives float32. feature_dtypes, when given, holds it per key (a CSV's int and
    # float columns mixed) and wins over feature_dtype.
    feature_dtype: str = "float32"
    feature_dtypes: Dict[str, str] = dataclasses.field(default_factory=dict)
    # Name of the model input in the serving signature (and the TFLite input tensor).
    input_name: str = "image"
    output_name: str = "probabilities"
    # Layers that quantization-aware training left in float (selective QAT).
    float_layers: List[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.feature_keys = list(self.feature_keys)
        self.input_shape = [int(d) for d in self.input_shape]
        self.validate()

    @property
    def input_size(self) -> int:
        return int(math.prod(self.input_shape))

    def validate(self) -> None:
        if not self.feature_keys:
            raise ValueError("feature_keys is empty: name the example feature(s) that form the model input.")
        if not self.input_shape or any(d <= 0 for d in self.input_shape):
            raise ValueError(f"input_shape={self.input_shape} must be a list of positive sizes, e.g. [8, 8, 1].")
        if len(self.feature_keys) not in (1, self.input_size):
            raise ValueError(
                f"{len(self.feature_keys)} feature keys cannot fill input_shape={self.input_shape} "
                f"({self.input_size} values): give one key holding {self.input_size} values, or "
                f"{self.input_size} scalar keys."
            )
        if self.label_key in self.feature_keys:
            raise ValueError(f"label_key {self.label_key!r} is also listed as an input feature.")
        if self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes}: a classifier needs at least 2 classes.")
        for dtype in [self.feature_dtype, *self.feature_dtypes.values()]:
            if dtype not in DTYPES:
                raise ValueError(f"feature dtype {dtype!r}: use one of {DTYPES}.")

    def dtype_of(self, key: str) -> str:
        return self.feature_dtypes.get(key, self.feature_dtype)

    @property
    def values_per_key(self) -> int:
        return self.input_size if len(self.feature_keys) == 1 else 1

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, model_dir: str) -> str:
        path = fsutil.join(model_dir, MODEL_SPEC_FILE)
        fsutil.write_bytes_atomic(path, self.to_json().encode("utf-8"))
        return path

    @classmethod
    def read(cls, model_dir: str) -> "ModelSpec":
        path = fsutil.join(model_dir, MODEL_SPEC_FILE)
        if not fsutil.exists(path):
            raise ValueError(
                f"{path} is missing: the model was not produced by this project's Trainer. "
                f"Write a {MODEL_SPEC_FILE} (see components/trainer/README.md) next to the SavedModel."
            )
        return cls.from_json(fsutil.read_text(path))
