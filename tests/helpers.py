"""Test data: real digits examples written the way CsvExampleGen writes them
(gzipped TFRecords of tf.Examples, int64 features, Split-train / Split-eval folders)."""
from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import tensorflow as tf
from tfx.types import artifact_utils, standard_artifacts

from tests.conftest import REPO_ROOT

DIGITS_CSV = REPO_ROOT / "data" / "digits" / "digits.csv"
PIXEL_KEYS = [f"pixel_{i:02d}" for i in range(64)]


def digits_rows() -> List[dict]:
    with DIGITS_CSV.open(newline="") as f:
        return [{k: int(v) for k, v in row.items()} for row in csv.DictReader(f)]


def to_example(row: dict) -> tf.train.Example:
    feats = {}
    for key, value in row.items():
        if isinstance(value, (list, tuple)):
            kind = tf.train.Feature(float_list=tf.train.FloatList(value=value)) if any(
                isinstance(v, float) for v in value) else tf.train.Feature(int64_list=tf.train.Int64List(value=value))
        elif isinstance(value, float):
            kind = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        else:
            kind = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        feats[key] = kind
    return tf.train.Example(features=tf.train.Features(feature=feats))


def write_split(folder: Path, examples: Iterable[tf.train.Example], shards: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    examples = list(examples)
    for s in range(shards):
        path = folder / f"data_tfrecord-{s:05d}-of-{shards:05d}.gz"
        with tf.io.TFRecordWriter(str(path), options="GZIP") as w:
            for ex in examples[s::shards]:
                w.write(ex.SerializeToString())


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
