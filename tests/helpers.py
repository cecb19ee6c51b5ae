"""Test data: real digits examples written the way CsvExampleGen writes them
(gzipped TFRecords of tf.Examples, int64 features, Split-train / Split-eval folders)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, List, Optional

from tfx.types import artifact_utils, standard_artifacts

from tfx_quantization.quantization.data import to_example, write_split  # noqa: F401  (re-exported for tests)


# One home for the digits rows and column names: the benchmarks' data helpers and the config.
from bench.common import PIXEL_KEYS, digits_rows  # noqa: E402,F401
from tfx_quantization.model_contract import ModelContract  # noqa: E402

# The digits job's contract (data/examples/digits.yaml): the 64 pixel columns as one
# [8, 8, 1] input named `image`, labels 0..9 in `label`.
DIGITS_CONTRACT = ModelContract(inputs={"image": {"features": PIXEL_KEYS, "shape": [8, 8, 1]}}, num_classes=10)


def write_examples(
    root: Path,
    rows: Optional[List[dict]] = None,
    transform: Optional[Callable[[dict], dict]] = None,
    splits=("train", "eval"),
) -> standard_artifacts.Examples:
    """An Examples artifact at `root`: every third row goes to eval, the rest to train."""
    rows = digits_rows() if rows is None else rows
    if transform:
        rows = [transform(dict(r)) for r in rows]
    parts = {"train": [r for i, r in enumerate(rows) if i % 3], "eval": [r for i, r in enumerate(rows) if not i % 3]}
    for split in splits:
        write_split(root / f"Split-{split}", (to_example(r) for r in parts.get(split, rows)))
    artifact = standard_artifacts.Examples()
    artifact.uri = str(root)
    artifact.split_names = artifact_utils.encode_split_names(list(splits))
    return artifact


def artifact(cls, uri: Path):
    a = cls()
    a.uri = str(uri)
    os.makedirs(uri, exist_ok=True)
    return a


def run_summary(metadata_path: Path, evaluation_dir: Path, properties: dict) -> List[str]:
    """The end-of-run summary (pipeline/summary.py) of a real ML Metadata store holding one
    ModelEvaluation artifact at `evaluation_dir` (where the evaluator's outcome.json is)
    with custom `properties` (floats, ints or strings, as the evaluator records them): its lines."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    from tfx_quantization.pipeline import summary

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata_path)
    store = metadata_store.MetadataStore(config)
    kind = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="ModelEvaluation"))
    evaluation = metadata_store_pb2.Artifact(type_id=kind, uri=str(evaluation_dir))
    for key, value in properties.items():
        kind = "double_value" if isinstance(value, float) else "int_value" if isinstance(value, int) else "string_value"
        setattr(evaluation.custom_properties[key], kind, value)
    store.put_artifacts([evaluation])
    return summary.summarize(str(metadata_path)).splitlines()


def trained_workload(root: Path, rows: List[dict], contract, train_settings, calibration_settings) -> dict:
    """A shipped workload through the library as its pipeline runs it: Examples (every third
    row eval), the float model trained (no QAT) and a calibration sample of the train split.
    {train, eval, model, result, sampling, calibration_files}."""
    from tfx_quantization import training
    from tfx_quantization.quantization import data
    from tfx_quantization.representative_dataset_gen import sampling

    examples = write_examples(root / "examples", rows)
    train_dir, eval_dir = f"{examples.uri}/Split-train", f"{examples.uri}/Split-eval"
    result = training.train(train_dir, eval_dir, str(root / "model"), None, str(root / "logs"), train_settings,
                            contract)
    stats = sampling.run_sampling(train_dir, str(root / "calibration"), calibration_settings)
    return dict(train=train_dir, eval=eval_dir, model=str(root / "model"), result=result, sampling=stats,
                calibration_files=data.split_files(f"{root}/calibration/Split-calibration"))
