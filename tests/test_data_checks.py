"""The every-example data check runs as one vectorised parse per batch of records (#32):
a clean split takes no Python step per example, a batch holding a problem is walked example
by example to name it (the messages of test_bad_inputs / test_failures_explained), and the
vectorised check refuses every problem the walk names. Nothing here trains."""
import numpy as np
import pytest
import tensorflow as tf

from tfx_quantization.model_contract import ModelContract
from tfx_quantization.quantization import data
from tfx_quantization.quantization.model_spec import ModelSpec
from tests.helpers import DIGITS_CONTRACT, PIXEL_KEYS, digits_rows

pytestmark = pytest.mark.fast
N = 2 * data.READ_BATCH + 100  # three batches, the last one short


def _rows(n):
    rows = digits_rows()
    return [dict(rows[i % len(rows)]) for i in range(n)]


def test_a_clean_split_takes_no_python_step_per_example_and_a_bad_batch_is_walked(tmp_path, monkeypatch):
    walked = []
    walk = data._check_record
    monkeypatch.setattr(data, "_check_record", lambda record, where, *rest: walked.append(where) or walk(
        record, where, *rest))
    files = data.write_split(tmp_path / "Split-eval", [data.to_example(r) for r in _rows(N)], shards=1)
    spec = data.check_examples(files, ModelSpec.of_contract(DIGITS_CONTRACT))
    assert walked == []
    assert spec.inputs[0].feature_dtypes == {k: "int64" for k in PIXEL_KEYS} and spec.label_dtype == "int64"

    rows = _rows(N)
    rows[N - 3]["label"] = 12  # in the third batch
    rows[5]["pixel_07"] = 2.5  # a float in an int column, in the first batch
    files = data.write_split(tmp_path / "Split-bad", [data.to_example(r) for r in rows], shards=1)
    with pytest.raises(ValueError) as e:
        data.check_examples(files, ModelSpec.of_contract(DIGITS_CONTRACT))
    message = str(e.value)
    assert (f"label 'label' is outside 0..9 (set num_classes, or fix the labels): 1 of {N} example(s), first at "
            f"record {N - 3} of Split-bad/data_tfrecord-00000-of-00001.gz") in message
    assert "input feature 'pixel_07' is int64 in some examples and float in others" in message
    assert len(walked) == data.READ_BATCH + 100  # the first and the last batch, not the clean middle one


FLOATS = ModelContract(inputs={"x": {"features": ["x"], "shape": [3]}}, num_classes=3)
IMAGES = ModelContract(inputs={"img": {"shape": [4, 4, 1], "image": {}}}, num_classes=3)
TARGETS = ModelContract(inputs={"x": {"features": ["x"], "shape": [3]}}, task="regression", label_key="t")
MULTIHOT = ModelContract(inputs={"x": {"features": ["x"], "shape": [3]}}, task="multilabel", num_classes=2)
PNG = tf.io.encode_png(np.zeros((4, 4, 1), np.uint8)).numpy()


@pytest.mark.parametrize("contract, good, bad", [
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"label": 1}),  # missing
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [1.0, 2.0], "label": 1}),  # wrong length
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [1, 2, 3], "label": 1}),  # int in a float feature
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [1.0, float("nan"), 3.0], "label": 1}),
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [1.0, float("inf"), 3.0], "label": 1}),
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [b"a", b"b", b"c"], "label": 1}),  # text
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [1.0, 2.0, 3.0], "label": 3}),  # outside 0..2
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [1.0, 2.0, 3.0], "label": -1}),
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [1.0, 2.0, 3.0], "label": [1, 2]}),
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [1.0, 2.0, 3.0], "label": 1.0}),
    (FLOATS, {"x": [1.0, 2.0, 3.0], "label": 1}, {"x": [1.0, 2.0, 3.0]}),  # no label
    (IMAGES, {"img": PNG, "label": 0}, {"img": b"GIF89a...", "label": 0}),
    (IMAGES, {"img": PNG, "label": 0}, {"img": PNG[:len(PNG) // 2], "label": 0}),  # truncated PNG
    (IMAGES, {"img": PNG, "label": 0}, {"img": [PNG, PNG], "label": 0}),
    (TARGETS, {"x": [1.0, 2.0, 3.0], "t": 1.5}, {"x": [1.0, 2.0, 3.0], "t": float("nan")}),
    (TARGETS, {"x": [1.0, 2.0, 3.0], "t": 1.5}, {"x": [1.0, 2.0, 3.0], "t": 2}),  # int target among floats
    (MULTIHOT, {"x": [1.0, 2.0, 3.0], "label": [0, 1]}, {"x": [1.0, 2.0, 3.0], "label": [0, 2]}),
    (MULTIHOT, {"x": [1.0, 2.0, 3.0], "label": [0, 1]}, {"x": [1.0, 2.0, 3.0], "label": [1]}),
])
def test_the_vectorised_check_refuses_what_the_walk_names(tmp_path, contract, good, bad):
    spec = ModelSpec.of_contract(contract)
    good, bad = (data.to_example(r).SerializeToString() for r in (good, bad))
    check = data.batch_check(spec, data._stored_kinds(good, spec))
    assert check(tf.constant([good, good, good]))
    assert not check(tf.constant([good, bad, good]))
    # and the walk names it: check_examples fails on the split holding it
    files = data.write_split(tmp_path / "Split-x", [good, bad], shards=1)
    with pytest.raises(ValueError, match="1 of 2 example|in some examples and float in others"):
        data.check_examples(files, spec)


def test_million_bench_records_parse_as_the_digits_rows_would(tmp_path):
    """bench.common.digits_like_records encodes tf.Examples from a byte table: each parses
    to what data.to_example gives for the same pixel values and label."""
    from bench.common import digits_like_records

    records = list(digits_like_records(50, seed=3, chunk=20))
    again = list(digits_like_records(50, seed=3, chunk=20))
    assert records == again and len(set(records)) > 1
    spec = data.check_examples(data.write_split(tmp_path / "Split-eval", records, shards=1),
                               ModelSpec.of_contract(DIGITS_CONTRACT))
    for record in records:
        example = tf.train.Example.FromString(record)
        row = {k: example.features.feature[k].int64_list.value[0] for k in PIXEL_KEYS + ["label"]}
        assert example == data.to_example(row)
    assert spec.label_dtype == "int64"



def test_the_beam_stages_read_a_gzipped_shard_in_fixed_memory(tmp_path):
    """The evaluator's pass and calibration sampling read records with beam_records.read_file:
    every record of a gzipped shard in order, as TensorFlow's reader gives them, while holding
    at most what one READ_SIZE read decompresses to. Beam's ReadFromTFRecord (16 MiB reads)
    held a shard of up to 16 MiB compressed whole, decompressed: the million-example pass's
    memory grew with its shards (BENCHMARKS.md, section 8)."""
    import tracemalloc

    from bench.common import digits_like_records
    from tfx_quantization.quantization import beam_records

    uncompressed = data.write_split(tmp_path / "plain", digits_like_records(200, seed=1), shards=1, compress=False)
    assert list(beam_records.read_file(uncompressed[0])) == list(data.iter_serialized(uncompressed))
    files = data.write_split(tmp_path / "Split-eval", digits_like_records(16_000, seed=1), shards=1)
    expected = list(data.iter_serialized(files))
    size = sum(len(r) for r in expected)
    tracemalloc.start()
    try:
        count = 0
        for record in beam_records.read_file(files[0]):
            assert record == expected[count]
            count += 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == len(expected)
    assert peak < size / 4, f"reading a {size / 2**20:.1f} MB shard peaked at {peak / 2**20:.1f} MB"
