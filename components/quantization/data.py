"""tf.Example TFRecords -> model inputs. One home for parsing, shared by every stage."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from components import fsutil
from components.quantization.model_spec import ModelSpec


def split_files(split_dir: str | Path) -> List[str]:
    """The record files of one split folder (TFX writes gzipped TFRecords there); local
    paths and object-store URIs alike."""
    split_dir = str(split_dir)
    if not fsutil.isdir(split_dir):
        raise ValueError(f"split folder {split_dir} does not exist")
    files = [fsutil.join(split_dir, name) for name in fsutil.listdir(split_dir)]
    files = [f for f in files if not fsutil.isdir(f)]
    if not files:
        raise ValueError(f"split folder {split_dir} holds no record files")
    return files


def compression_of(path: str) -> str:
    return "GZIP" if str(path).endswith(".gz") else ""


def iter_serialized(files: List[str]) -> Iterator[bytes]:
    for f in files:
        for record in tf.data.TFRecordDataset(f, compression_type=compression_of(f)):
            yield record.numpy()


def inspect_examples(files: List[str], feature_keys: List[str], label_key: str, values_per_key: int) -> str:
    """Checks the first example against the declared input and returns the features' dtype.

    Raises a ValueError that names the problem: an empty split, a missing label or feature
    key, a feature whose size does not match the declared input shape, mixed dtypes.
    """
    first = next(iter_serialized(files), None)
    if first is None:
        raise ValueError(f"the split in {os.path.dirname(files[0])} is empty: it holds no examples")
    feats = tf.train.Example.FromString(first).features.feature
    names = sorted(feats)
    shown = f"{names[:8]}{' ...' if len(names) > 8 else ''}"
    if label_key not in feats:
        raise ValueError(f"label key {label_key!r} is not a feature of the examples (they have {shown})")
    kinds = set()
    for key in feature_keys:
        if key not in feats:
            raise ValueError(f"input feature {key!r} is not a feature of the examples (they have {shown})")
        kind = feats[key].WhichOneof("kind")
        size = len(getattr(feats[key], kind).value) if kind else 0
        if size != values_per_key:
            raise ValueError(
                f"feature {key!r} holds {size} values per example, but the declared input shape "
                f"needs {values_per_key}: fix input_shape or feature_keys"
            )
        kinds.add(kind)
    if kinds == {"int64_list"}:
        return "int64"
    if kinds == {"float_list"}:
        return "float32"
    raise ValueError(f"input features must be all int64 or all float, found {sorted(kinds)}")


def feature_spec(spec: ModelSpec, with_label: bool = True) -> dict:
    dtype = tf.int64 if spec.feature_dtype == "int64" else tf.float32
    fs = {k: tf.io.FixedLenFeature([spec.values_per_key], dtype) for k in spec.feature_keys}
    if with_label:
        fs[spec.label_key] = tf.io.FixedLenFeature([1], tf.int64)
    return fs


def parse_batch(serialized, spec: ModelSpec, with_label: bool = True):
    """Serialized tf.Examples [B] -> (float32 inputs [B, *input_shape], int64 labels [B]).

    A feature whose size does not match the declared shape fails inside parse_example
    with an error naming the key.
    """
    parsed = tf.io.parse_example(serialized, feature_spec(spec, with_label))
    parts = [tf.cast(parsed[k], tf.float32) for k in spec.feature_keys]
    x = tf.reshape(tf.concat(parts, axis=-1), [-1, *spec.input_shape])
    if not with_label:
        return x
    return x, tf.reshape(parsed[spec.label_key], [-1])


def parse_numpy(serialized: List[bytes], spec: ModelSpec) -> Tuple[np.ndarray, np.ndarray]:
    x, y = parse_batch(tf.constant(serialized), spec)
    return x.numpy(), y.numpy()


def make_dataset(
    files: List[str],
    spec: ModelSpec,
    batch_size: int,
    shuffle: bool = False,
    seed: Optional[int] = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """A batched tf.data pipeline of (inputs, labels) read straight from the records."""
    ds = tf.data.TFRecordDataset(files, compression_type=compression_of(files[0]))
    if shuffle:
        ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size).map(lambda s: parse_batch(s, spec))
    return ds.prefetch(tf.data.AUTOTUNE)


def representative_dataset(files: List[str], spec: ModelSpec, max_samples: Optional[int] = None):
    """The `representative_dataset` callable the TFLite converter wants.

    Each call streams the records again (nothing is held in memory), parses them with the
    model's spec and yields one [1, *input_shape] float32 sample per example, in file order.
    """
    if not files:
        raise ValueError("no calibration files given")

    def generate():
        count = 0
        for serialized in iter_serialized(files):
            if max_samples is not None and count >= max_samples:
                return
            x = parse_batch(tf.constant([serialized]), spec, with_label=False)
            count += 1
            yield [x.numpy()]
        if count == 0:
            raise ValueError(f"calibration files {files} hold no examples")

    return generate


def to_example(row: dict) -> tf.train.Example:
    """A tf.Example from {key: int | float | list of them}; floats become float_list."""
    feats = {}
    for key, value in row.items():
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if any(isinstance(v, (float, np.floating)) for v in values):
            feats[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))
        else:
            feats[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    return tf.train.Example(features=tf.train.Features(feature=feats))


def write_split(folder: str | Path, examples, shards: int = 2, compress: bool = True) -> List[str]:
    """Writes serialized tf.Examples (or Example protos) into `shards` TFRecord files, as
    TFX's ExampleGen lays out one split (gzipped by default). Returns the file paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = [e if isinstance(e, bytes) else e.SerializeToString() for e in examples]
    paths = []
    for s in range(shards):
        path = folder / f"data_tfrecord-{s:05d}-of-{shards:05d}{'.gz' if compress else ''}"
        with tf.io.TFRecordWriter(str(path), options="GZIP" if compress else None) as writer:
            for record in records[s::shards]:
                writer.write(record)
        paths.append(str(path))
    return paths
