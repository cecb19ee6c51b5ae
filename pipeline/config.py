"""Every setting of the pipeline in one place.

Defaults run the digits job from a fresh clone. Each field can be overridden with an
environment variable named QP_<FIELD> (for example QP_PIPELINE_NAME=my-pipeline,
QP_BEAM_PIPELINE_ARGS='["--direct_num_workers=1"]'). Lists and dicts are given as JSON;
numbers and booleans as their usual spelling. Unknown QP_ variables are an error, so a typo
never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from pathlib import Path
from typing import Dict, List, Mapping, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = "QP_"
# Variables with the prefix that are not settings (the Makefile's interpreter override).
_NON_SETTING_VARS = {"QP_PYTHON"}

DIGITS_PIXEL_KEYS = [f"pixel_{i:02d}" for i in range(64)]


@dataclasses.dataclass
class PipelineConfig:
    # Where things are.
    pipeline_name: str = "digits-quantization"
    data_root: str = str(REPO_ROOT / "data" / "digits")
    # 'csv' (CsvExampleGen) or 'tfrecord' (ImportExampleGen over tf.Example records).
    data_format: str = "csv"
    # File pattern under data_root; use e.g. 'span-{SPAN}/*' so scheduled runs pick up
    # the newest span folder.
    input_pattern: str = "*"
    output_root: str = str(REPO_ROOT / "local_outputs")
    pipeline_root: str = ""  # default: <output_root>/pipeline_root
    metadata_path: str = ""  # default: <output_root>/metadata.sqlite
    # Beam: DirectRunner with one in-process worker. On 2 cores, two multi-processing
    # workers were slower at every size measured (BENCHMARKS.md, section 3: worker start-up
    # outweighs the parallelism); pass
    # '["--direct_running_mode=multi_processing", "--direct_num_workers=2"]' on bigger machines.
    beam_pipeline_args: List[str] = dataclasses.field(default_factory=lambda: ["--direct_num_workers=1"])
    enable_cache: bool = True

    # Model and training (QATTrainer).
    feature_keys: List[str] = dataclasses.field(default_factory=lambda: list(DIGITS_PIXEL_KEYS))
    input_shape: List[int] = dataclasses.field(default_factory=lambda: [8, 8, 1])
    label_key: str = "label"
    num_classes: int = 10
    model: str = "digits_cnn"  # built-in: digits_cnn, mobilenet_v2
    module_file: str = ""  # a user module with build_model(); overrides `model`
    model_kwargs: Dict[str, object] = dataclasses.field(default_factory=dict)
    epochs: int = 10
    steps_per_epoch: int = 0
    qat_epochs: int = 2
    qat_steps_per_epoch: int = 0
    batch_size: int = 32
    learning_rate: float = 1e-3
    qat_learning_rate: float = 1e-4
    seed: int = 42

    # Calibration (RepresentativeDatasetGen).
    calibration_samples: int = 200
    calibration_strategy: str = "stratified"

    # Quantization (PostTrainingQuantizer). Empty list: every variant the inputs allow.
    variants: List[str] = dataclasses.field(default_factory=list)
    integer_io_type: str = "int8"
    # selective_integer (accuracy-aware search): validation data comes from this split of
    # the ExampleGen output, never from the gate's eval split; the search's accuracy bound
    # is max_accuracy_drop.
    selective_validation_split: str = "train"
    validation_samples: int = 1000
    max_float_layers: int = 8
    max_search_steps: int = 8

    # Gate and selection (TFLiteEvaluator). None disables a bound.
    max_accuracy_drop: Optional[float] = 0.01
    max_relative_drop: Optional[float] = None
    max_model_bytes: Optional[int] = None
    max_latency_ms: Optional[float] = None
    min_accuracy: Optional[float] = None
    allow_float32: bool = False
    selection: str = "smallest"  # smallest, fastest, or a JSON list of variant names
    metric: str = "accuracy"
    latency_runs: int = 50
    num_threads: int = 1

    # Deployment (Pusher).
    push_destination: str = ""  # default: <output_root>/serving
    served_model_name: str = "digits"

    def __post_init__(self):
        if not self.pipeline_root:
            self.pipeline_root = str(Path(self.output_root) / "pipeline_root")
        if not self.metadata_path:
            self.metadata_path = str(Path(self.output_root) / "metadata.sqlite")
        if not self.push_destination:
            self.push_destination = str(Path(self.output_root) / "serving")
        self.validate()

    def validate(self) -> None:
        if self.data_format not in ("csv", "tfrecord"):
            raise ValueError(
                f"data_format={self.data_format!r} is not supported: use 'csv' "
                "(a folder of CSV files with a header) or 'tfrecord' (tf.Example records)."
            )
        if not self.pipeline_name:
            raise ValueError("pipeline_name is empty: set QP_PIPELINE_NAME to a name.")
        if self.calibration_strategy not in ("uniform", "stratified"):
            raise ValueError(
                f"calibration_strategy={self.calibration_strategy!r}: use 'uniform' or 'stratified'"
            )

    @property
    def selection_policy(self):
        """'smallest', 'fastest', or the list given as JSON in `selection`."""
        text = self.selection.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"selection={self.selection!r} is not a JSON list: {e}") from None
        return text

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides) -> "PipelineConfig":
        """Defaults, then QP_* environment variables, then explicit keyword overrides."""
        environ = os.environ if environ is None else environ
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        values: Dict[str, object] = {}
        for var, raw in environ.items():
            if not var.startswith(ENV_PREFIX) or var in _NON_SETTING_VARS:
                continue
            name = var[len(ENV_PREFIX):].lower()
            if name not in fields:
                raise ValueError(
                    f"{var} is not a pipeline setting. Known settings: "
                    + ", ".join(ENV_PREFIX + n.upper() for n in fields)
                )
            values[name] = _parse(var, raw, hints[name])
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> Dict[str, object]:
        return dataclasses.asdict(self)


def _parse(var: str, raw: str, hint) -> object:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union and type(None) in args:  # Optional[X]
        if raw.strip().lower() in ("", "none", "null"):
            return None
        hint = next(a for a in args if a is not type(None))
        origin = typing.get_origin(hint)
    try:
        if hint is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str:
            return raw
        if origin in (list, dict):
            value = json.loads(raw)
            if not isinstance(value, origin):
                raise ValueError(f"expected a JSON {origin.__name__}")
            return value
    except (ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"{var}={raw!r} cannot be read as {hint}: {e}") from None
    raise TypeError(f"no parser for {var} of type {hint}")


if __name__ == "__main__":
    # `python -m pipeline.config [field]`: print the effective configuration or one field.
    config = PipelineConfig.from_env()
    if len(sys.argv) > 1:
        print(getattr(config, sys.argv[1]))
    else:
        print(json.dumps(config.to_dict(), indent=2))
