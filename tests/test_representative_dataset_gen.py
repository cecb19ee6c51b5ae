"""RepresentativeDatasetGen: reproducible, stratified Beam sampling and the converter generator."""
import logging
import math
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf
from tfx.types import standard_artifacts

from tfx_quantization import contracts
from tfx_quantization.quantization import convert, data
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.representative_dataset_gen import sampling
from tfx_quantization.representative_dataset_gen.component import RepresentativeDatasetGen
from tfx_quantization.representative_dataset_gen.executor import Executor
from tfx_quantization.settings import CalibrationSettings
from tests.helpers import artifact, digits_rows, write_examples

TWO_WORKERS = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def _cal(num_samples, strategy="uniform", label_key="", seed=0):
    return CalibrationSettings(num_samples=num_samples, strategy=strategy, label_key=label_key, seed=seed)


def _sample_bytes(out_dir):
    with open(f"{out_dir}/Split-calibration/{contracts.CALIBRATION_FILE}", "rb") as f:
        return f.read()


def _labels(out_dir):
    files = data.split_files(f"{out_dir}/Split-calibration")
    return [tf.train.Example.FromString(r).features.feature["label"].int64_list.value[0]
            for r in data.iter_serialized(files)]


@pytest.fixture(scope="module")
def train_split(digits_examples):
    return f"{digits_examples.uri}/Split-train"


def test_same_seed_same_bytes_different_seed_different_sample(tmp_path, train_split):
    a = sampling.run_sampling(train_split, str(tmp_path / "a"), _cal(50, seed=1))
    sampling.run_sampling(train_split, str(tmp_path / "b"), _cal(50, seed=1))
    sampling.run_sampling(train_split, str(tmp_path / "c"), _cal(50, seed=2))
    assert a["num_samples_taken"] == 50
    assert _sample_bytes(tmp_path / "a") == _sample_bytes(tmp_path / "b")
    records = lambda d: set(data.iter_serialized(data.split_files(f"{d}/Split-calibration")))  # noqa: E731
    assert records(tmp_path / "a") != records(tmp_path / "c")


def test_the_sample_does_not_depend_on_the_serialized_feature_order(tmp_path, train_split):
    """ExampleGen may write the same example with its features in another order on another
    run: the calibration set (and so the model bytes) must not change."""
    records = list(data.iter_serialized(data.split_files(train_split)))[:300]

    def reordered(record):
        example = tf.train.Example.FromString(record)
        out = tf.train.Example()
        for name in reversed(sorted(example.features.feature)):  # insertion order is serialization order
            out.features.feature[name].CopyFrom(example.features.feature[name])
        return out.SerializeToString()

    shuffled = [reordered(r) for r in reversed(records)]
    assert set(shuffled).isdisjoint(records)  # the bytes differ, the examples do not
    for name, recs in (("forward", records), ("reversed", shuffled)):
        with tf.io.TFRecordWriter(str(tmp_path / f"{name}.gz"), options="GZIP") as w:
            for r in recs:
                w.write(r)
        split = tmp_path / f"split_{name}"
        split.mkdir()
        (tmp_path / f"{name}.gz").rename(split / "data.gz")
        sampling.run_sampling(str(split), str(tmp_path / f"out_{name}"), _cal(40, "stratified", "label", 3))
    assert _sample_bytes(tmp_path / "out_forward") == _sample_bytes(tmp_path / "out_reversed")


def test_two_workers_give_the_same_bytes_as_one(tmp_path, train_split):
    sampling.run_sampling(train_split, str(tmp_path / "one"), _cal(120, "stratified", "label", 9),
                          ["--direct_num_workers=1"])
    sampling.run_sampling(train_split, str(tmp_path / "two"), _cal(120, "stratified", "label", 9), TWO_WORKERS)
    assert _sample_bytes(tmp_path / "one") == _sample_bytes(tmp_path / "two")


def test_stratified_counts_follow_class_frequencies(tmp_path, train_split):
    stats = sampling.run_sampling(train_split, str(tmp_path / "s"), _cal(200, "stratified", "label", 3))
    split_counts = Counter(
        tf.train.Example.FromString(r).features.feature["label"].int64_list.value[0]
        for r in data.iter_serialized(data.split_files(train_split))
    )
    total = sum(split_counts.values())
    sample_counts = Counter(_labels(tmp_path / "s"))
    assert sum(sample_counts.values()) == 200
    for label, count in split_counts.items():
        assert abs(sample_counts[label] - 200 * count / total) <= 1, (label, sample_counts)
    assert stats["per_class_samples"] == {str(k): v for k, v in sorted(sample_counts.items())}


def test_quotas_give_every_class_one_and_respect_totals():
    assert stratified_sum(sampling.stratified_quotas({0: 1000, 1: 1, 2: 1}, 10)) == 10
    q = sampling.stratified_quotas({0: 1000, 1: 1, 2: 1}, 10)
    assert q[1] == 1 and q[2] == 1 and q[0] == 8
    assert sampling.stratified_quotas({0: 3, 1: 2}, 10) == {0: 3, 1: 2}
    assert sampling.stratified_quotas({0: 5, 1: 5, 2: 5}, 2) in ({0: 1, 1: 1, 2: 0}, {0: 1, 1: 0, 2: 1}, {0: 0, 1: 1, 2: 1})


def stratified_sum(q):
    return sum(q.values())


def test_more_samples_than_examples_takes_all_and_warns(tmp_path, caplog):
    examples = write_examples(tmp_path / "ex", rows=digits_rows()[:30])
    with caplog.at_level(logging.WARNING):
        stats = sampling.run_sampling(f"{examples.uri}/Split-train", str(tmp_path / "o"), _cal(500))
    assert stats["num_samples_taken"] == 20
    # 20 of 500 is far below the size asked for: a warning for the run (the quantizer carries it on).
    warning = ("the calibration sample holds 20 example(s), far below num_samples=500 (the split has 20 usable "
               "example(s)): the int8 ranges rest on these few; sample a larger split (source_split) or lower "
               "num_samples")
    assert stats["warnings"] == [warning] and warning in caplog.text
    assert contracts.read_calibration_warnings(data.split_files(tmp_path / "o" / "Split-calibration")) == [warning]
    # A split a little short of num_samples is a log line only.
    with caplog.at_level(logging.WARNING):
        stats = sampling.run_sampling(f"{examples.uri}/Split-train", str(tmp_path / "o2"), _cal(30))
    assert stats["warnings"] == [] and "num_samples=30 is larger than the split (20 usable examples)" in caplog.text
    assert contracts.read_calibration_warnings(data.split_files(tmp_path / "o2" / "Split-calibration")) == []


@pytest.mark.fast
def test_stratified_classes_left_out_of_the_sample_are_a_warning():
    stats = dict(num_samples_requested=5, num_samples_taken=5, num_examples_in_split=50, num_dropped_non_finite=0,
                 label_key="label", class_counts_in_split={str(c): 5 for c in range(10)},
                 per_class_samples={"0": 1, "2": 1, "4": 1, "6": 1, "8": 1})
    assert sampling.sample_warnings(stats) == [
        "class(es) 1, 3, 5, 7, 9 of 'label' have no example in the stratified calibration sample (5 of 10 classes; "
        "num_samples=5): the int8 ranges never saw them; raise num_samples to at least the number of classes"]
    assert sampling.sample_warnings(dict(stats, num_samples_requested=10, num_samples_taken=10,
                                         per_class_samples={str(c): 1 for c in range(10)})) == []


def test_non_finite_examples_are_dropped_and_counted(tmp_path):
    rows = [{"x": [float(i), 1.0], "label": i % 2} for i in range(20)]
    rows[4]["x"] = [float("nan"), 1.0]  # rows 1, 2, 4, 5, 7, ... go to train (13 rows)
    rows[7]["x"] = [float("inf"), 1.0]
    examples = write_examples(tmp_path / "ex", rows=rows, splits=("train",))
    stats = sampling.run_sampling(f"{examples.uri}/Split-train", str(tmp_path / "o"), _cal(100))
    assert stats["num_dropped_non_finite"] == 2 and stats["num_samples_taken"] == 11


def test_all_non_finite_fails(tmp_path):
    rows = [{"x": [float("nan")], "label": 0} for _ in range(4)]
    examples = write_examples(tmp_path / "ex", rows=rows, splits=("train",))
    with pytest.raises(ValueError, match=r"no example is left to sample: 2 example\(s\) were dropped"):
        sampling.run_sampling(f"{examples.uri}/Split-train", str(tmp_path / "o"), _cal(10))


def _run_executor(tmp_path, examples, model=None, **props):
    out = artifact(standard_artifacts.Examples, tmp_path / "out")
    settings = dict(source_split="train", num_samples=40, strategy="uniform", label_key="", seed=0)
    settings.update(props)
    inputs = {"examples": [examples], **({"model": [model]} if model is not None else {})}
    Executor().Do(inputs, {"representative_dataset": [out]}, {"settings": __import__("json").dumps(settings)})
    return out


def test_executor_writes_a_calibration_split_with_properties(tmp_path, digits_examples):
    out = _run_executor(tmp_path, digits_examples, strategy="stratified", label_key="label", seed=4)
    assert out.split_names == '["calibration"]'
    assert out.get_int_custom_property("num_samples") == 40
    assert out.get_string_custom_property("strategy") == "stratified"
    assert out.get_int_custom_property("seed") == 4
    assert sum(__import__("json").loads(out.get_string_custom_property("per_class_counts")).values()) == 40
    assert len(_labels(out.uri)) == 40


@pytest.mark.parametrize(
    "props, rows, message",
    [
        (dict(source_split="validation"), None, "have no 'validation' split"),
        (dict(strategy="stratified", label_key="digit"), None, "label_key 'digit' is not a feature"),
        (dict(strategy="stratified"), None, "strategy 'stratified' needs label_key"),
        (dict(), [], "is empty: there is nothing to sample"),
        (dict(strategy="random"), None, "strategy = 'random': Input should be 'uniform' or 'stratified'"),
    ],
)
def test_bad_input_names_the_problem(tmp_path, props, rows, message):
    examples = write_examples(tmp_path / "ex", rows=digits_rows()[:30] if rows is None else rows)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _run_executor(tmp_path, examples, **props)


def test_component_rejects_bad_parameters_early():
    from tfx.types import channel_utils

    ch = channel_utils.as_channel([standard_artifacts.Examples()])
    with pytest.raises(ValueError, match="num_samples = 0: Input should be greater than or equal to 1"):
        RepresentativeDatasetGen(examples=ch, settings=CalibrationSettings.build(num_samples=0))
    with pytest.raises(ValueError, match="strategy 'stratified' needs label_key"):
        RepresentativeDatasetGen(examples=ch, settings=CalibrationSettings(strategy="stratified"))
    with pytest.raises(ValueError, match="CalibrationSettings: num_samples = 0"):
        RepresentativeDatasetGen(examples=ch, settings={"num_samples": 0})


def test_examples_alone_build_and_sample_uniformly(tmp_path, digits_examples):
    """RepresentativeDatasetGen(examples=...) needs no settings: with no label key known it
    samples uniformly; with one (its own, or a model's contract) it stratifies."""
    from tfx.types import channel_utils

    examples = channel_utils.as_channel([standard_artifacts.Examples()])
    component = RepresentativeDatasetGen(examples=examples)
    settings = CalibrationSettings.from_json(component.exec_properties["settings"])
    assert settings.strategy is None and settings.label_key == ""
    assert settings.resolved().strategy == "uniform" and settings.resolved("label").strategy == "stratified"
    # Stratified with the label left to the model's contract: checked when the model is there.
    model_channel = channel_utils.as_channel([standard_artifacts.Model()])
    RepresentativeDatasetGen(examples=examples, settings={"strategy": "stratified"}, model=model_channel)
    out = _run_executor(tmp_path, digits_examples, strategy=None)
    assert out.get_string_custom_property("strategy") == "uniform"
    assert not out.has_custom_property("per_class_counts")


def test_the_label_key_comes_from_the_models_contract(tmp_path, digits_examples, trained_digits):
    model = artifact(standard_artifacts.Model, trained_digits["model_uri"])  # its contract: the file beside it
    out = _run_executor(tmp_path / "a", digits_examples, model=model, strategy=None)
    assert out.get_string_custom_property("strategy") == "stratified"
    assert sum(__import__("json").loads(out.get_string_custom_property("per_class_counts")).values()) == 40
    # The settings' own label key wins over the contract's.
    with pytest.raises(ValueError, match="label_key 'digit' is not a feature"):
        _run_executor(tmp_path / "b", digits_examples, model=model, strategy=None, label_key="digit")
    # A model with no contract leaves calibration uniform.
    bare = artifact(standard_artifacts.Model, tmp_path / "bare")
    assert _run_executor(tmp_path / "c", digits_examples, model=bare, strategy=None).get_string_custom_property(
        "strategy") == "uniform"


def test_generator_feeds_a_full_integer_conversion(tmp_path, train_split, trained_digits):
    sampling.run_sampling(train_split, str(tmp_path / "cal"), _cal(64, seed=0))
    files = data.split_files(f"{tmp_path / 'cal'}/Split-calibration")
    gen = data.representative_dataset(files, data.spec_for(trained_digits["float"], files))
    samples = list(gen())
    assert len(samples) == 64 and samples[0]["image"].shape == (1, 8, 8, 1) and samples[0]["image"].dtype == np.float32
    tflite = convert.convert(convert.INTEGER_ONLY, trained_digits["float"], gen)
    info = convert.validate(convert.INTEGER_ONLY, tflite, samples[0])
    assert info["inputs"][0]["dtype"] == "int8" and not info["float_ops"]
