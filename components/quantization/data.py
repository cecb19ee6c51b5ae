"""tf.Example TFRecords -> model inputs. One home for parsing, shared by every stage."""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfx_quantization import fsutil
from tfx_quantization.model_contract import MULTILABEL, REGRESSION
from tfx_quantization.quantization.model_spec import ModelSpec


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


RECORD_FRAMING = 16  # a TFRecord's bytes besides its data: length (8), its crc (4), the data's crc (4)


def _tf_reason(error: Exception) -> str:
    """TensorFlow's error text without its op and function decorations."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = text.split("}} ", 1)[-1].split(" [Op:", 1)[0]
    return text.replace("' failed with ", ": ")[:200]


def _gzip_complete(path: str, consumed: int) -> bool:
    """Whether a gzipped file held exactly the `consumed` bytes of records: its trailer's
    length (ISIZE, the last 4 bytes) must match, else (several gzip members, or a truncated
    stream that TensorFlow's reader may end quietly) the whole stream is decompressed to tell."""
    import gzip
    import zlib

    size = fsutil.size(path)
    with fsutil._open(path, "rb") as f:
        f.seek(max(size - 4, 0))
        if size >= 18 and int.from_bytes(f.read(4), "little") == consumed % 2 ** 32:
            return True
    try:
        with fsutil._open(path, "rb") as raw, gzip.GzipFile(fileobj=raw) as stream:
            while stream.read(1 << 20):
                pass
    except (EOFError, OSError, zlib.error):
        return False
    return True


READ_BATCH = 1024  # records per step of the batched reader (record_batches): one Python step per batch


def _read_one_by_one(path: str) -> Iterator[bytes]:
    """The records of one file read one at a time, counting them: only to name the record
    where reading stops (record_batches falls back here when its batched read fails)."""
    gz = compression_of(path)
    what = f"{'gzipped ' if gz else ''}TFRecord file"
    count = 0
    try:
        for record in tf.data.TFRecordDataset(path, compression_type=gz):
            count += 1
            yield record.numpy()
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as e:
        raise ValueError(
            f"{path} is not a valid {what}: record {count} (counting from 0) is corrupt or truncated "
            f"({_tf_reason(e)}); write the file again or remove it from the input") from None
    except tf.errors.NotFoundError as e:
        raise ValueError(f"{path} cannot be read ({_tf_reason(e)}): restore it or remove it from the input") from None


def record_batches(path: str, batch_size: int = READ_BATCH) -> Iterator[tf.Tensor]:
    """The serialized records of one file as string tensors [<= batch_size], in order, read
    and measured inside tf.data (no Python step per record; the next batch is read while
    the caller works on this one).

    A file that is missing, corrupt or truncated (gzipped or not) is a ValueError naming it,
    the record where reading stopped (counting from 0) and the fix: on a failed read the file
    is read again one record at a time to find that record. TensorFlow's reader silently
    drops a truncated last record of an uncompressed file, so the bytes read are checked
    against the file's size (a gzipped file: against its trailer's length)."""
    gz = compression_of(path)
    what = f"{'gzipped ' if gz else ''}TFRecord file"
    if not fsutil.exists(path):
        raise ValueError(f"{path} does not exist (removed while the run read its folder?): restore it or run the "
                         "stage that wrote it again")
    ds = (tf.data.TFRecordDataset(path, compression_type=gz).batch(batch_size)
          .map(lambda b: (b, tf.reduce_sum(tf.cast(tf.strings.length(b), tf.int64)))).prefetch(1))
    count, consumed = 0, 0
    try:
        for batch, size in ds:
            count += int(batch.shape[0])
            consumed += int(size) + RECORD_FRAMING * int(batch.shape[0])
            yield batch
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError,
            tf.errors.NotFoundError) as e:
        for _ in _read_one_by_one(path):  # raises, naming the record
            pass
        raise ValueError(f"{path} cannot be read ({_tf_reason(e)}): restore it or remove it from the input") from None
    if gz and not _gzip_complete(path, consumed):
        raise ValueError(
            f"{path} is not a valid {what}: record {count} (counting from 0) is truncated (the compressed stream ends "
            f"early, after {count} complete record(s)); write the file again or remove it from the input")
    if not gz and consumed != fsutil.size(path):
        raise ValueError(
            f"{path} is not a valid {what}: record {count} (counting from 0) is truncated ({fsutil.size(path) - consumed} "
            f"trailing bytes after {count} complete record(s)); write the file again or remove it from the input")


def iter_serialized(files: List[str]) -> Iterator[bytes]:
    """The serialized records of the files, in order (read in batches: record_batches, whose
    errors name a missing, corrupt or truncated file, the record and the fix)."""
    for path in files:
        for batch in record_batches(path):
            yield from batch.numpy().tolist()


KINDS = {"int64_list": "int64", "float_list": "float32", "bytes_list": "bytes"}
MAX_LISTED = 8


class _Problems:
    """Counts each kind of problem with where it first occurs, for one message."""

    def __init__(self):
        self.found: Dict[str, list] = {}

    def add(self, what: str, where: str) -> None:
        entry = self.found.setdefault(what, [0, where])
        entry[0] += 1

    def message(self, folder: str, total: int) -> str:
        lines = [f"{what}: {n} of {total} example(s), first at {first}"
                 for what, (n, first) in list(self.found.items())[:MAX_LISTED]]
        more = f"; and {len(self.found) - MAX_LISTED} more" if len(self.found) > MAX_LISTED else ""
        return f"the examples in {folder} are not usable: " + "; ".join(lines) + more + SPLIT_POSITIONS


# Where check_examples's positions are: the files it reads are a pipeline stage's output
# (ExampleGen's split, or a sample of it), never the user's input file, whose rows ExampleGen
# hash-partitioned into splits. Said once per message, so no one looks for line 29 of data.csv.
SPLIT_POSITIONS = (" (positions are records of the split's files as the pipeline wrote them from your input, counted "
                   "from 0: not lines of your input file)")


def split_position(path: str, index: int) -> str:
    """'record 29 of Split-train/data_tfrecord-00000-of-00002.gz': a record of a split's file,
    named with its split folder."""
    return f"record {index} of {os.path.basename(os.path.dirname(path))}/{os.path.basename(path)}"


IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG


def _undecodable(encoded: bytes, channels: int) -> str:
    """Why an encoded PNG/JPEG does not decode ('' when it does)."""
    try:
        tf.io.decode_image(encoded, channels=channels, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
        return _tf_reason(e)
    return ""


def check_examples(files: List[str], spec: ModelSpec) -> ModelSpec:
    """Checks EVERY example against the spec's inputs and the label of each of its outputs
    (ModelSpec.output_specs: a multi-output model's labelled extra outputs cost one more pass
    each), and returns the spec with each feature's and label's storage dtype filled in
    (_check_output_examples: what is checked and how)."""
    primary, *extra = spec.output_specs()
    checked = [_check_output_examples(files, primary)]
    for o in extra:
        checked.append(_check_output_examples(files, o) if o.has_labels else o)
    return checked[0].with_outputs(checked) if extra else checked[0]


def _check_output_examples(files: List[str], spec: ModelSpec) -> ModelSpec:
    """Checks EVERY example against a single-output spec's inputs and label, and returns the spec with
    each feature's storage dtype filled in ('int64', 'float32' or 'bytes'; int and float
    columns may be mixed).

    One pass over the records; a ValueError lists each problem with its count and where it
    first occurs (file and record number): an empty split, a missing feature or label (an
    empty CSV cell), a feature holding the wrong number of values, text where numbers are
    needed, NaN or infinite values, an image feature that is not one PNG or JPEG or does not decode, a label
    that is not one integer or lies outside 0..num_classes-1, a feature stored as int in
    some examples and float in others, and a corrupt file (named).

    The pass is vectorised: each batch of READ_BATCH records is parsed at once with the
    storage dtypes of the first record (tf.io.parse_example, as the stages parse them) and
    checked with tensor operations (batch_check); only a batch that fails is walked example
    by example (_check_record) to name each problem and where it is. A clean split never
    takes a Python step per example.
    """
    folder = os.path.dirname(files[0]) if files else "(no files)"
    problems = _Problems()
    inputs = [(key, i) for i in spec.inputs for key in i.features]
    kinds: Dict[str, set] = {k: set() for k, _ in inputs}
    label_kinds: set = set()
    total, fast = 0, None
    for path in files:
        index = 0
        for batch in record_batches(path):
            if fast is None and total == 0:
                fast = batch_check(spec, _stored_kinds(batch[0].numpy(), spec))
            if fast is None or not fast(batch):
                for i, record in enumerate(batch.numpy().tolist()):
                    _check_record(record, split_position(path, index + i), inputs, spec, kinds, label_kinds,
                                  problems)
            else:
                for key, kind in fast.kinds.items():
                    (label_kinds if key == spec.label_key and spec.has_labels else kinds[key]).add(kind)
            index += int(batch.shape[0])
            total += int(batch.shape[0])
    if total == 0:
        raise ValueError(f"the split in {folder} is empty: it holds no examples")
    for key, seen in kinds.items():
        if len(seen) > 1:
            problems.add(f"input feature {key!r} is int64 in some examples and float in others", "(several)")
    label_kinds.discard(None)
    if len(label_kinds) > 1:
        problems.add(f"label {spec.label_key!r} is int64 in some examples and float in others", "(several)")
    if problems.found:
        raise ValueError(problems.message(folder, total))
    spec = with_storage_dtypes(spec, {k: KINDS[next(iter(seen))] for k, seen in kinds.items() if seen})
    return dataclasses.replace(spec, label_dtype=KINDS[next(iter(label_kinds))]) if label_kinds else spec


def _stored_kinds(record: bytes, spec: ModelSpec) -> Dict[str, Optional[str]]:
    """How one example stores each input feature and the label ('int64_list', 'float_list',
    'bytes_list'; None when it lacks one)."""
    feats = tf.train.Example.FromString(record).features.feature
    keys = [k for i in spec.inputs for k in i.features] + ([spec.label_key] if spec.has_labels else [])
    return {k: feats[k].WhichOneof("kind") if k in feats else None for k in keys}


class _BatchCheck:
    """Serialized tf.Examples [B] -> True when every example passes every check
    check_examples makes, in one vectorised step. `kinds`: the storage kind of each
    feature (and the label) the batch is parsed with."""

    def __init__(self, fn, kinds: Dict[str, str]):
        self._fn, self.kinds = fn, kinds

    def __call__(self, serialized: tf.Tensor) -> bool:
        try:
            return bool(self._fn(serialized))
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):  # a missing feature, a wrong length or dtype
            return False


def batch_check(spec: ModelSpec, kinds: Dict[str, Optional[str]]) -> Optional[_BatchCheck]:
    """The vectorised form of check_examples's per-example checks for examples stored as
    `kinds` (the first example's, _stored_kinds): tf.io.parse_example with each feature's
    storage dtype and length, so a missing feature, a wrong number of values or another
    dtype makes the parse fail; then, on the parsed tensors, finite float values, one PNG or
    JPEG that decodes (tf.io.decode_image) per image feature, and a label that fits the task
    (class in 0..num_classes-1, multi-hot 0/1, finite targets). A batch it refuses is walked
    example by example to say why. None when those kinds cannot pass (text in a numeric
    input, a missing feature, a float class label): every batch is then walked."""
    numeric = {k: kinds.get(k) for i in spec.inputs if i.image is None for k in i.features}
    images = [(k, i) for i in spec.inputs if i.image is not None for k in i.features]
    label_kind = kinds.get(spec.label_key) if spec.has_labels else None
    if any(kind not in ("int64_list", "float_list") for kind in numeric.values()):
        return None
    if any(kinds.get(k) != "bytes_list" for k, _ in images):
        return None
    if spec.has_labels and label_kind not in (("int64_list", "float_list") if spec.task == REGRESSION
                                              else ("int64_list",)):
        return None
    used = {k: kinds[k] for k in numeric} | {k: "bytes_list" for k, _ in images}
    checked = with_storage_dtypes(spec, {k: KINDS[kind] for k, kind in used.items()})
    if spec.has_labels:
        checked = dataclasses.replace(checked, label_dtype=KINDS[label_kind])
        used[spec.label_key] = label_kind
    features = feature_spec(checked)
    floats = [k for k, kind in numeric.items() if kind == "float_list"]
    n = spec.num_classes

    def check(serialized):
        parsed = tf.io.parse_example(serialized, features)
        ok = [tf.constant(True)]
        if floats:
            ok.append(tf.reduce_all(tf.math.is_finite(tf.concat([parsed[k] for k in floats], axis=-1))))
        for key, inp in images:
            encoded = parsed[key]
            magic = tf.reduce_any(tf.stack([tf.strings.substr(encoded, 0, len(m)) == m for m in IMAGE_MAGIC]), axis=0)
            ok.append(tf.reduce_all(magic))
            sizes = tf.map_fn(lambda e: tf.size(tf.io.decode_image(e, channels=inp.image.channels,
                                                                      expand_animations=False)),
                              tf.boolean_mask(encoded, magic), fn_output_signature=tf.int32)
            ok.append(tf.reduce_all(sizes > 0))  # a corrupt image raises
        if spec.has_labels:
            y = parsed[spec.label_key]
            if spec.is_classifier:
                ok.append(tf.reduce_all((y >= 0) & (y < n)))
            elif spec.task == MULTILABEL:
                ok.append(tf.reduce_all((y == 0) | (y == 1)))
            elif label_kind == "float_list":
                ok.append(tf.reduce_all(tf.math.is_finite(y)))
        return tf.reduce_all(tf.stack(ok))

    fn = tf.function(check, input_signature=[tf.TensorSpec([None], tf.string)]) if images else check
    return _BatchCheck(fn, used)


def _check_record(record: bytes, where: str, inputs, spec: ModelSpec, kinds: Dict[str, set], label_kinds: set,
                  problems: "_Problems") -> None:
    """check_examples's checks on one example, each problem added to `problems` at `where`;
    the storage kind of each feature and the label added to `kinds` / `label_kinds`."""
    feats = tf.train.Example.FromString(record).features.feature
    for key, inp in inputs:
        feat = feats.get(key)
        kind = feat.WhichOneof("kind") if feat is not None else None
        values = getattr(feat, kind).value if kind else []
        if not len(values):
            problems.add(f"input feature {key!r} is missing (an empty cell?)", where)
            continue
        if inp.image is not None:
            if kind != "bytes_list" or len(values) != 1 or not values[0].startswith(IMAGE_MAGIC):
                problems.add(f"input feature {key!r} is not one PNG or JPEG image (input {inp.name!r} "
                             "decodes images)", where)
            else:
                corrupt = _undecodable(values[0], inp.image.channels)
                if corrupt:
                    problems.add(f"input feature {key!r} holds a corrupt or truncated image ({corrupt}): "
                                 "encode it again or drop the example", where)
            kinds[key].add(kind)
            continue
        if kind == "bytes_list" and values[0].startswith(IMAGE_MAGIC):
            problems.add(f"input feature {key!r} holds encoded PNG/JPEG images, but input {inp.name!r} "
                         f"declares no image decoding: set contract.inputs.{inp.name}.image (e.g. "
                         "{channels: 1}) to decode them", where)
            continue
        if kind == "bytes_list":
            problems.add(f"input feature {key!r} holds text, not numbers", where)
            continue
        kinds[key].add(kind)
        if len(values) != inp.values_per_key:
            problems.add(f"input feature {key!r} holds {len(values)} values, input {inp.name!r} "
                         f"{inp.shape} needs {inp.values_per_key} (fix the model's input or the contract's "
                         "features)", where)
        elif kind == "float_list" and not all(math.isfinite(v) for v in values):
            problems.add(f"input feature {key!r} holds NaN or infinite values", where)
    if spec.has_labels:
        label_kinds.add(_check_label(feats.get(spec.label_key), spec, problems, where))


def _check_label(label, spec: ModelSpec, problems: _Problems, where: str) -> Optional[str]:
    """Checks one example's label against the task (class: one int64 in 0..num_classes-1;
    multilabel: num_classes int64 values, each 0 or 1; regression: num_classes finite int or
    float values) and returns its storage kind (None when it is missing)."""
    key, n, task = spec.label_key, spec.num_classes, spec.task
    kind = label.WhichOneof("kind") if label is not None else None
    values = getattr(label, kind).value if kind else []
    if not len(values):
        problems.add(f"label {key!r} is missing", where)
        return None
    shown = f"{KINDS.get(kind, kind)} x{len(values)}"
    if spec.is_classifier:
        if kind != "int64_list" or len(values) != 1:
            problems.add(f"label {key!r} is not one integer (it is {shown})", where)
        elif not 0 <= values[0] < n:
            problems.add(f"label {key!r} is outside 0..{n - 1} (set num_classes, or fix the labels)", where)
    elif task == MULTILABEL:
        if kind != "int64_list" or len(values) != n:
            problems.add(f"label {key!r} is not {n} integers, one 0/1 per label (it is {shown}; multilabel)", where)
        elif any(v not in (0, 1) for v in values):
            problems.add(f"label {key!r} holds values other than 0 and 1 (multilabel labels are multi-hot)", where)
    elif kind == "bytes_list" or len(values) != n:
        problems.add(f"label {key!r} is not {n} number(s) (it is {shown}; regression with num_classes={n} "
                     "target(s))", where)
    elif kind == "float_list" and not all(math.isfinite(v) for v in values):
        problems.add(f"label {key!r} holds NaN or infinite values", where)
    return kind


def spec_for(model_dir: str, files: List[str], contract=None) -> ModelSpec:
    """The spec of the SavedModel in `model_dir` (ModelSpec.read) checked against every
    example of `files`, with the features' storage dtypes."""
    return check_examples(files, ModelSpec.read(model_dir, contract))


def with_storage_dtypes(spec: ModelSpec, dtypes: Dict[str, str]) -> ModelSpec:
    """A copy of `spec` whose inputs parse each feature with its storage dtype."""
    inputs = [dataclasses.replace(i, feature_dtypes={k: dtypes[k] for k in i.features if k in dtypes})
              for i in spec.inputs]
    return dataclasses.replace(spec, inputs=inputs)


_TF_DTYPES = {"int64": tf.int64, "float32": tf.float32, "int32": tf.int32, "bytes": tf.string}


def feature_spec(spec: ModelSpec, with_label: bool = True) -> dict:
    fs = {}
    for inp in spec.inputs:
        for k in inp.features:
            if inp.image is not None:
                fs[k] = tf.io.FixedLenFeature([], tf.string)
            else:
                fs[k] = tf.io.FixedLenFeature([inp.values_per_key], _TF_DTYPES[inp.feature_dtypes.get(k, "float32")])
    for o in spec.output_specs() if with_label else []:
        if o.has_labels:
            width = 1 if o.is_classifier else o.num_classes
            dtype = o.label_dtype or ("int64" if o.is_classifier or o.task == MULTILABEL else "float32")
            fs[o.label_key] = tf.io.FixedLenFeature([width], _TF_DTYPES[dtype])
    return fs


def decode_images(encoded, inp):
    """Encoded PNG/JPEG strings [B] -> float32 [B, h, w, c]: decoded, resized to the input's
    height and width (bilinear; exact when the sizes match), then `pixel * scale + offset`."""
    h, w, c = inp.shape

    def one(s):
        image = tf.io.decode_image(s, channels=inp.image.channels, expand_animations=False)
        image.set_shape([None, None, c])
        return tf.image.resize(tf.cast(image, tf.float32), [h, w])

    images = tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
    return images * inp.image.scale + inp.image.offset


def parse_batch(serialized, spec: ModelSpec, with_label: bool = True, all_labels: bool = False):
    """Serialized tf.Examples [B] -> ({input name: [B, *shape] in the input's dtype}, labels):
    classifiers: int64 class labels [B]; multilabel: int64 multi-hot [B, labels];
    regression: float32 targets [B, targets]; none: an empty float32 [B, 0]. The labels are
    the primary output's; with `all_labels`, {output name: its labels} for every output
    (a multi-output model, ModelSpec.output_specs).

    A feature whose size does not match the declared shape fails inside parse_example
    with an error naming the key (check_examples finds it first, with a count).
    """
    parsed = tf.io.parse_example(serialized, feature_spec(spec, with_label))
    x = {}
    for inp in spec.inputs:
        if inp.image is not None:
            value = decode_images(parsed[inp.features[0]], inp)
        else:
            parts = [tf.cast(parsed[k], tf.float32) for k in inp.features]
            value = tf.reshape(tf.concat(parts, axis=-1), [-1, *inp.shape])
        x[inp.name] = tf.cast(value, _TF_DTYPES[inp.dtype])
    if not with_label:
        return x

    def label(o: ModelSpec):
        if not o.has_labels:
            return tf.zeros([tf.shape(serialized)[0], 0], tf.float32)
        value = parsed[o.label_key]
        if o.is_classifier:
            return tf.reshape(value, [-1])
        return value if o.task == MULTILABEL else tf.cast(value, tf.float32)

    if all_labels:
        return x, {o.output_name: label(o) for o in spec.output_specs()}
    return x, label(spec)


def parse_numpy(serialized: List[bytes], spec: ModelSpec) -> Tuple[Dict[str, np.ndarray], np.ndarray]:
    x, y = parse_batch(tf.constant(serialized), spec)
    return {k: v.numpy() for k, v in x.items()}, y.numpy()


def make_dataset(
    files: List[str],
    spec: ModelSpec,
    batch_size: int,
    shuffle: bool = False,
    seed: Optional[int] = None,
    repeat: bool = False,
    all_labels: bool = False,
) -> tf.data.Dataset:
    """A batched tf.data pipeline of ({input name: batch}, labels) read straight from the
    records (`all_labels`: {output name: labels}, parse_batch)."""
    ds = tf.data.TFRecordDataset(files, compression_type=compression_of(files[0]))
    if shuffle:
        ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size).map(lambda s: parse_batch(s, spec, all_labels=all_labels))
    return ds.prefetch(tf.data.AUTOTUNE)


def label_mean(files: List[str], spec: ModelSpec, batch_size: int = 1024) -> List[float]:
    """The mean of a regression label over every example of `files`, per target
    ([num_classes] floats): one streaming pass (sums only)."""
    total, count = np.zeros(spec.num_classes, np.float64), 0
    for serialized in iter_batches(files, batch_size):
        y = tf.io.parse_example(tf.constant(serialized), {spec.label_key: feature_spec(spec)[spec.label_key]})
        values = tf.cast(y[spec.label_key], tf.float64).numpy()
        total += values.sum(0)
        count += len(values)
    if not count:
        raise ValueError(f"the split of {files[:1]} is empty: no label mean to compare a regressor with")
    return (total / count).tolist()


def iter_batches(files: List[str], batch_size: int) -> Iterator[List[bytes]]:
    """The serialized records of `files` in lists of at most `batch_size`."""
    batch: List[bytes] = []
    for record in iter_serialized(files):
        batch.append(record)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def representative_dataset(files: List[str], spec: ModelSpec, max_samples: Optional[int] = None):
    """The `representative_dataset` callable the TFLite converter wants.

    Each call streams the records again (nothing is held in memory), parses them with the
    model's spec and yields one sample per example, in file order: {signature input name:
    [1, *shape]}, which the converter matches to the signature's inputs by name.
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
            yield {k: v.numpy() for k, v in x.items()}
        if count == 0:
            raise ValueError(f"calibration files {files} hold no examples")

    return generate


class Serving:
    """The float SavedModel's signature as a function of parsed inputs: raw outputs [B, units]."""

    def __init__(self, model_dir: str, spec: ModelSpec):
        self.spec = spec
        self._fn = tf.saved_model.load(model_dir).signatures[spec.signature]

    def __call__(self, x: Dict[str, np.ndarray]) -> np.ndarray:
        return self._fn(**{k: tf.constant(v) for k, v in x.items()})[self.spec.output_name].numpy()

    def outputs(self, x: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Every output the spec names ({output name: raw outputs [B, ...]}), in one call."""
        result = self._fn(**{k: tf.constant(v) for k, v in x.items()})
        return {name: result[name].numpy() for name in self.spec.output_names}


def to_example(row: dict) -> tf.train.Example:
    """A tf.Example from {key: int | float | bytes | list of them}; floats become float_list,
    bytes or str bytes_list (as CsvExampleGen writes a text column)."""
    feats = {}
    for key, value in row.items():
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if any(isinstance(v, (bytes, str)) for v in values):
            feats[key] = tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[v if isinstance(v, bytes) else str(v).encode() for v in values]))
        elif any(isinstance(v, (float, np.floating)) for v in values):
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
