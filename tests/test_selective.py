"""selective_integer: on a model where plain full-integer quantization collapses, the
accuracy-aware search keeps a few layers float and passes the gate; the eval split is
never used in the search."""
import os

import apache_beam as beam
import numpy as np
import re

import pytest
import tf_keras as keras
from apache_beam.options.pipeline_options import PipelineOptions

from tfx_quantization.post_training_quantizer import build
from tfx_quantization.quantization import data
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.settings import GateSettings, QuantizeSettings, SettingsError
from tfx_quantization.tflite_evaluator import evaluate
from tfx_quantization.training import save_serving_model

ONE_WORKER = lambda: beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"]))  # noqa: E731


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory, trained_digits):
    """The trained digits CNN with one dead hidden unit whose outgoing weights are 1e4.

    In float the unit is always 0 (ReLU of -1), so predictions do not change. Quantized,
    the huge weights set the int8 scale of the classifier's kernel, and every real weight
    rounds to zero: full-integer quantization collapses. Keeping that one layer float fixes it.
    """
    spec = ModelSpec.read(trained_digits["float"])
    trained = keras.models.load_model(trained_digits["float"])
    layers = [l for l in trained.layers if not isinstance(l, keras.layers.InputLayer)]
    hidden, head = layers[-2], layers[-1]
    inputs = keras.Input(tuple(spec.input_shape), name=spec.input_name)
    x = inputs
    copies = []
    for layer in layers[:-2]:
        copy = layer.__class__.from_config(layer.get_config())
        x = copy(x)
        copies.append((copy, layer))
    x = keras.layers.Dense(hidden.units + 1, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(spec.num_classes, activation="softmax", name=spec.output_name)(x)
    model = keras.Model(inputs, outputs)
    for copy, layer in copies:
        copy.set_weights(layer.get_weights())
    k1, b1 = hidden.get_weights()
    model.get_layer("hidden").set_weights([np.concatenate([k1, np.zeros((k1.shape[0], 1))], 1),
                                           np.concatenate([b1, [-1.0]])])
    k2, b2 = head.get_weights()
    model.get_layer(spec.output_name).set_weights([np.concatenate([k2, np.full((1, k2.shape[1]), 1e4)], 0), b2])
    out = tmp_path_factory.mktemp("outlier") / "model"
    save_serving_model(model, out, spec)
    return str(out)


def _quantize(out, model_dir, calibration, validation_split_dir, **settings):
    return build.quantize_all(
        model_dir, str(out),
        QuantizeSettings(variants=["float32", "full_integer", "selective_integer"], validation_samples=400,
                         **settings),
        calibration_files=data.split_files(f"{calibration}/Split-calibration"),
        validation_files=data.split_files(validation_split_dir))


def test_selective_passes_where_full_integer_fails_with_few_float_layers(tmp_path, outlier_model, digits_calibration,
                                                                          digits_examples):
    train_dir, eval_dir = f"{digits_examples.uri}/Split-train", f"{digits_examples.uri}/Split-eval"
    manifest = _quantize(tmp_path / "q", outlier_model, digits_calibration, train_dir)
    entry = manifest.variants["selective_integer"]
    assert entry.status == "ok", entry.reason
    record = entry.selective
    assert 1 <= len(record.float_layers) <= 2
    assert any("probabilities" in name for name in record.float_layers)
    assert record.layer_errors[0].op_name == "FULLY_CONNECTED"
    assert record.steps[0].num_float_layers == 0 and not record.steps[0].passed
    assert 0.5 < record.integer_compute_fraction < 1.0
    # The search saw only the train split, never the eval split the gate uses.
    assert manifest.validation.files and all("Split-train" in f for f in manifest.validation.files)
    assert not any("Split-eval" in f for f in manifest.validation.files)

    result = evaluate.evaluate_models(eval_dir, outlier_model, str(tmp_path / "q"), str(tmp_path / "ev"),
                                      GateSettings(max_accuracy_drop=0.01, latency_runs=5), ONE_WORKER)
    full, sel = result.variants["full_integer"], result.variants["selective_integer"]
    assert full["accuracy_drop"] > 0.5 and not result.verdicts["full_integer"].passed
    assert sel["accuracy_drop"] <= 0.01 and result.verdicts["selective_integer"].passed
    assert result.selected_variant == "selective_integer"
    page = open(tmp_path / "ev" / "report.html").read()
    assert "Selective integer quantization" in page and "RMSE / scale" in page
    assert os.path.exists(tmp_path / "ev" / "selective_search.png")


def test_integer_io_configuration(tmp_path, outlier_model, digits_calibration, digits_examples):
    manifest = _quantize(tmp_path / "q", outlier_model, digits_calibration, f"{digits_examples.uri}/Split-train",
                         selective_integer_io=True, integer_io_type="int8")
    entry = manifest.variants["selective_integer"]
    assert entry.status == "ok", entry.reason
    assert entry.inputs[0].dtype == "int8" and entry.outputs[0].dtype == "int8"
    assert entry.selective.steps[-1].passed


def _search_inputs(outlier_model, digits_calibration, digits_examples):
    files = data.split_files(f"{digits_calibration}/Split-calibration")
    spec = data.spec_for(outlier_model, files)
    calibration = data.representative_dataset(files, spec)
    x, y = data.parse_numpy(list(data.iter_serialized(data.split_files(f"{digits_examples.uri}/Split-train")))[:200],
                            spec)
    return calibration, x, y


# A float accuracy of 2.0 can never be reached, so every step of the search fails.
UNREACHABLE = 2.0


def test_budget_spent_reports_failure_with_the_best_figures(tmp_path, outlier_model, digits_calibration,
                                                            digits_examples):
    from tfx_quantization.quantization import selective

    calibration, x, y = _search_inputs(outlier_model, digits_calibration, digits_examples)
    content, record = selective.search(outlier_model, calibration, x, y, UNREACHABLE,
                                       QuantizeSettings(search_max_drop=0.0, max_float_layers=2, max_search_steps=8))
    assert content is None and record.float_layers is None
    assert [s.num_float_layers for s in record.steps] == [0, 1, 2]
    assert record.best_step.accuracy_drop == min(s.accuracy_drop for s in record.steps)
    # Asked for explicitly, the failed variant is recorded with the best figures reached and warned
    # about; the stage goes on with what was built (one optional path never ends the run).
    manifest = build.quantize_all(
        outlier_model, str(tmp_path / "q"),
        # One step: all-integer, which collapses on this model.
        QuantizeSettings(variants=["float32", "selective_integer"], validation_samples=200,
                         max_float_layers=1, max_search_steps=1),
        calibration_files=data.split_files(f"{digits_calibration}/Split-calibration"),
        validation_files=data.split_files(f"{digits_examples.uri}/Split-train"))
    assert manifest.built() == ["float32"]
    entry = manifest.variants["selective_integer"]
    assert entry.status == "failed" and re.search("best validation drop .* float layer", entry.reason), entry.reason
    assert any(w.startswith("requested variant selective_integer failed") for w in manifest.warnings), manifest.warnings


@pytest.mark.parametrize("max_steps", [1, 2, 3])
def test_search_spends_at_most_max_search_steps_conversions(outlier_model, digits_calibration, digits_examples,
                                                            max_steps):
    from tfx_quantization.quantization import selective

    calibration, x, y = _search_inputs(outlier_model, digits_calibration, digits_examples)
    # Room for 8 float layers: only the step budget can stop the failing search.
    _, record = selective.search(outlier_model, calibration, x, y, UNREACHABLE,
                                 QuantizeSettings(search_max_drop=0.0, max_float_layers=8, max_search_steps=max_steps))
    assert len(record.steps) == max_steps
    assert [s.num_float_layers for s in record.steps] == [0, 1, 2][:max_steps]


def test_the_gate_split_cannot_be_the_search_split():
    with pytest.raises(SettingsError, match="is the split the evaluator's gate uses"):
        QuantizeSettings.build(validation_split="eval")


def test_selective_is_default_only_with_validation_data():
    assert "selective_integer" not in build.plan([])
    assert "selective_integer" in build.plan([], has_validation=True)


def test_in_model_normalization_is_kept_float_first_and_recovers_mixed_scale_inputs(tmp_path):
    """The hard workload: raw features of scales 1 to 600 feed a model that normalizes them
    itself. One int8 scale for the whole input loses the small features (full_integer far
    below float); keeping the normalization's two elementwise ops float moves the QUANTIZE
    after them and the three fully-connected layers stay int8."""
    import csv

    from tfx_quantization.quantization.interpreter import TFLiteRunner, accuracy
    from tfx_quantization.representative_dataset_gen import sampling
    from tfx_quantization.model_contract import ModelContract
    from tfx_quantization.settings import CalibrationSettings, TrainSettings
    from tfx_quantization import training
    from tests.conftest import REPO_ROOT
    from tests.helpers import write_examples

    with open(REPO_ROOT / "data" / "mixed_scale" / "mixed_scale.csv", newline="") as f:
        rows = [{k: (int(v) if k == "label" else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]
    examples = write_examples(tmp_path / "ex", rows=rows[:1500], splits=("train", "eval"))
    split = lambda s: f"{examples.uri}/Split-{s}"  # noqa: E731
    keys = [f"f{i:02d}" for i in range(8)]
    cfg = TrainSettings(model="tabular_mlp", epochs=15, seed=1)
    contract = ModelContract(inputs={"features": {"features": keys, "shape": [8]}}, num_classes=4)
    result = training.train(split("train"), split("eval"), str(tmp_path / "f"), None, str(tmp_path / "l"), cfg,
                            contract)
    assert result.float_accuracy > 0.8
    sampling.run_sampling(split("train"), str(tmp_path / "cal"), CalibrationSettings(num_samples=100, label_key="label",
                                                                                    seed=0))
    manifest = build.quantize_all(
        str(tmp_path / "f"), str(tmp_path / "q"), QuantizeSettings(variants=["full_integer", "selective_integer"]),
        calibration_files=data.split_files(f"{tmp_path / 'cal'}/Split-calibration"),
        validation_files=data.split_files(split("eval")))
    record = manifest.variants["selective_integer"].selective
    assert record.input_scaling_ops == ["tabular_mlp/normalize/sub",
                                        "tabular_mlp/normalize/truediv;tabular_mlp/normalize/Maximum"]
    assert record.float_layers == record.input_scaling_ops
    assert manifest.variants["selective_integer"].op_counts["FULLY_CONNECTED"] == 3
    files = data.split_files(split("eval"))
    spec = data.spec_for(str(tmp_path / "f"), files)
    x, y = data.parse_numpy(list(data.iter_serialized(files)), spec)

    def acc(name):
        return accuracy(TFLiteRunner(os.path.join(tmp_path / "q", manifest.variants[name].file)).predict(x), y)

    assert acc("full_integer") < result.float_accuracy - 0.2
    assert acc("selective_integer") >= result.float_accuracy - 0.02
