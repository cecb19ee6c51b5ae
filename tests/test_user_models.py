"""Models users actually write (issue #29): each case rebuilt from a public bug report of
quantizing with TFLite and tfmot, run through the stages' libraries as a pipeline runs them.

- A model tfmot cannot rebuild (a slice before a Dense): QAT is recorded as failed with
  tfmot's reason; the float model, the post-training variants, the gate and the push go on.
- A QAT copy that computes another function (tensorflow/model-optimization#1179: a
  Concatenate's inputs reordered): caught before fine-tuning, recorded, warned about.
- A logits output: trained with the logits loss when declared so; stopped with the fix when
  declared probabilities. A loss that does not move is a warning.
"""
import json
import os
import textwrap

import numpy as np
import pytest
import tf_keras as keras

from tfx_quantization import contracts, training
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.post_training_quantizer import build
from tfx_quantization.pusher import push
from tfx_quantization.quantization import data
from tfx_quantization.quantization.model_spec import InputSpec, ModelSpec
from tfx_quantization.representative_dataset_gen import sampling
from tfx_quantization.settings import (
    CalibrationSettings, FineTuneSettings, GateSettings, PushSettings, QuantizeSettings, TrainSettings,
)
from tfx_quantization.tflite_evaluator import evaluate
from tests.helpers import DIGITS_CONTRACT, PIXEL_KEYS, digits_rows, write_examples

GATE = GateSettings(latency_runs=3, latency_warmup=1, max_accuracy_drop=0.03)


def _split(examples, name):
    return f"{examples.uri}/Split-{name}"


def _calibration(examples, out):
    sampling.run_sampling(_split(examples, "train"), str(out),
                          CalibrationSettings(num_samples=100, label_key="label", seed=0))
    return data.split_files(f"{out}/Split-calibration")


def _module(tmp_path, body: str) -> str:
    path = tmp_path / "user_model.py"
    path.write_text("import tf_keras as keras\n\n\n" + textwrap.dedent(body))
    return str(path)


SLICING_MODEL = """
def build_model(input_shape, num_classes, input_name, output_name, **kwargs):
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = x[:, 1:7, 1:7, :]
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=output_name)(x)
    return keras.Model(inputs, outputs)
"""


def test_a_model_tfmot_cannot_rebuild_records_qat_failed_and_the_rest_of_the_run_goes_on(tmp_path, digits_examples):
    float_dir, qat_dir = tmp_path / "model", tmp_path / "qat_model"
    result = training.train(
        _split(digits_examples, "train"), _split(digits_examples, "eval"), str(float_dir), str(qat_dir),
        str(tmp_path / "logs"), TrainSettings(module_file=_module(tmp_path, SLICING_MODEL), epochs=8, qat_epochs=1,
                                              seed=0), DIGITS_CONTRACT)
    tfmot_says = "The last dimension of the inputs to a Dense layer should be defined. Found None."
    assert result.float_accuracy > 0.9
    assert result.qat_accuracy is None and tfmot_says in result.qat_failure and "\n" not in result.qat_failure
    assert tfmot_says in contracts.read_qat_failure(str(qat_dir))

    # Both QAT variants asked for by name: recorded as failed with the reason; integer_only is built.
    manifest = build.quantize_all(
        str(float_dir), str(tmp_path / "q"), QuantizeSettings(variants=["integer_only", "qat_int8", "qat_mixed"]),
        qat_model_dir=str(qat_dir), calibration_files=_calibration(digits_examples, tmp_path / "cal"))
    assert manifest.built() == ["integer_only"]
    for name in ("qat_int8", "qat_mixed"):
        assert manifest.variants[name].status == "failed" and tfmot_says in manifest.variants[name].reason
    [warning] = manifest.warnings
    assert "qat_int8, qat_mixed were not built" in warning and tfmot_says in warning

    # The gate blesses integer_only, says why QAT is missing, and the push publishes it.
    ev = evaluate.evaluate_models(_split(digits_examples, "eval"), str(float_dir), str(tmp_path / "q"),
                                  str(tmp_path / "ev"), GATE)
    assert ev.selected_variant == "integer_only" and ev.blessed
    assert warning in ev.warnings and warning in contracts.read_decision(str(tmp_path / "ev")).warnings
    assert tfmot_says in (tmp_path / "ev" / "report.html").read_text()
    pushed = push.push_selected(str(tmp_path / "q"), ev.blessed, ev.selected_variant,
                                PushSettings(destination=str(tmp_path / "registry"), model_name="slicing"), ev)
    assert pushed.pushed and pushed.version == 1


def test_a_failing_requested_variant_is_recorded_and_the_others_are_built(tmp_path, trained_digits):
    manifest = build.quantize_all(trained_digits["float"], str(tmp_path / "q"),
                                  QuantizeSettings(variants=["float32", "integer_only"]))
    assert manifest.built() == ["float32"]
    assert "no calibration data" in manifest.variants["integer_only"].reason
    assert manifest.warnings == [f"requested variant integer_only failed: {manifest.variants['integer_only'].reason}"]
    with pytest.raises(build.QuantizationError, match="no variant could be built"):
        build.quantize_all(trained_digits["float"], str(tmp_path / "q2"), QuantizeSettings(variants=["integer_only"]))


# ---- tensorflow/model-optimization#1179: the QAT copy rewires a Concatenate -------------------
def _rows_with_ink():
    return [dict(r, ink=float(sum(r[k] for k in PIXEL_KEYS)) / 1024.0) for r in digits_rows()]


def test_a_qat_copy_that_computes_another_function_is_caught_and_integer_only_still_ships(tmp_path):
    examples = write_examples(tmp_path / "examples", rows=_rows_with_ink())
    spec = ModelSpec([InputSpec("image", PIXEL_KEYS, [8, 8, 1]), InputSpec("ink", ["ink"], [1])], "label", 10)
    train_files = data.split_files(_split(examples, "train"))
    spec = data.check_examples(train_files, spec)
    # The layout: `ink` is declared after the layer it is concatenated with, and comes first.
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    pixels = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(keras.layers.Rescaling(1 / 16)(image)))
    ink = keras.Input((1,), name="ink")
    x = keras.layers.Concatenate()([ink, pixels])
    model = keras.Model([image, ink], keras.layers.Dense(10, activation="softmax", name="probabilities")(x))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy())
    model.fit(data.make_dataset(train_files, spec, 32, shuffle=True, seed=0), epochs=8, verbose=0)
    float_dir = str(tmp_path / "model")
    training.save_serving_model(model, float_dir, spec)

    result = training.fine_tune(float_dir, _split(examples, "train"), _split(examples, "eval"),
                                str(tmp_path / "qat"), str(tmp_path / "logs"), FineTuneSettings(qat_epochs=1, seed=0))
    assert result.qat_accuracy is None and result.float_accuracy > 0.9
    assert "QATCopyMismatch: the quantization-aware copy computes a different function" in result.qat_failure
    assert not os.path.exists(tmp_path / "qat" / "saved_model.pb")  # never fine-tuned, never saved

    manifest = build.quantize_all(float_dir, str(tmp_path / "q"),
                                  QuantizeSettings(variants=["integer_only", "qat_int8"]),
                                  qat_model_dir=str(tmp_path / "qat"),
                                  calibration_files=_calibration(examples, tmp_path / "cal"))
    assert manifest.built() == ["integer_only"] and "computes a different function" in \
        manifest.variants["qat_int8"].reason
    ev = evaluate.evaluate_models(_split(examples, "eval"), float_dir, str(tmp_path / "q"), str(tmp_path / "ev"),
                                  GATE)
    assert ev.selected_variant == "integer_only" and ev.blessed
    assert any("qat_int8 was not built" in w and "computes a different function" in w for w in ev.warnings)
    assert "computes a different function" in (tmp_path / "ev" / "report.html").read_text()


def test_the_copy_check_passes_a_faithful_copy_and_catches_the_rewired_one():
    from tfx_quantization.quantization import qat

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    a = keras.Input((10,), name="a")
    b = keras.layers.Dense(10)(a)
    c = keras.Input((20,), name="c")
    rewired = keras.Model([a, c], keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([c, b])))
    faithful = keras.Model([a, c], keras.layers.Dense(3, activation="softmax")(keras.layers.Concatenate()([b, c])))
    x = {"a": rng.random((8, 10), np.float32), "c": rng.random((8, 20), np.float32)}
    assert qat.check_copy(faithful, qat.quantization_aware_copy(faithful)[0], x, lambda y: y) <= 1e-6
    with pytest.raises(qat.QATCopyMismatch, match="model-optimization#1179"):
        qat.check_copy(rewired, qat.quantization_aware_copy(rewired)[0], x, lambda y: y)


# ---- the model's output: probabilities, logits or log-probabilities -------------------------
LOGITS_CNN = """
def build_model(input_shape, num_classes, input_name, output_name, filters=16):
    # The built-in small_cnn with its final softmax removed: a Dense(10) logits output.
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(2 * filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name=output_name)(x))
"""


def test_a_logits_output_trains_with_the_logits_loss_or_stops_with_the_fix(tmp_path, digits_examples):
    module = _module(tmp_path, LOGITS_CNN)
    cfg = TrainSettings(module_file=module, epochs=6, seed=7)
    split = _split(digits_examples, "train"), _split(digits_examples, "eval")
    logits = DIGITS_CONTRACT.model_copy(update={"output_kind": "logits"})
    result = training.train(*split, str(tmp_path / "model"), None, str(tmp_path / "logs"), cfg, logits)
    assert result.float_accuracy >= 0.95 and result.warnings == []
    assert ModelSpec.read(str(tmp_path / "model")).output_kind == "logits"  # recorded for the later stages

    with pytest.raises(ValueError) as raised:  # declared probabilities: stopped before any training
        training.train(*split, str(tmp_path / "model2"), None, str(tmp_path / "logs2"), cfg, DIGITS_CONTRACT)
    message = str(raised.value)
    assert message.startswith(f"output 'probabilities' of module_file {module} is declared probabilities "
                              "(contract.output_kind), but on the first train batch it holds logits")
    assert "set contract.output_kind to 'logits'" in message and "\n" not in message
    assert not os.path.exists(tmp_path / "model2" / "saved_model.pb")


@pytest.mark.fast
def test_output_kinds_are_told_apart():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(32, 10)) * 3
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    assert training.output_kind_of(p, 10) == "probabilities"
    assert training.output_kind_of(np.log(p), 10) == "log-probabilities"
    assert training.output_kind_of(z, 10) == "logits"
    assert training.output_kind_of(p[:, :1], 1) == "probabilities" and training.output_kind_of(z[:, :1], 1) == "logits"


FROZEN_MODEL = """
def build_model(input_shape, num_classes, input_name, output_name):
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name=output_name,
                                                  trainable=False)(x))
"""


def test_a_loss_that_does_not_move_is_a_warning_that_reaches_the_manifest(tmp_path, digits_examples):
    cfg = TrainSettings(module_file=_module(tmp_path, FROZEN_MODEL), epochs=1, seed=0)
    result = training.train(_split(digits_examples, "train"), _split(digits_examples, "eval"), str(tmp_path / "model"),
                            None, str(tmp_path / "logs"), cfg, DIGITS_CONTRACT)
    [warning] = result.warnings
    assert warning.startswith("the float training loss did not move in the first epoch")
    assert contracts.read_training_warnings(str(tmp_path / "model")) == [warning]
    manifest = build.quantize_all(str(tmp_path / "model"), str(tmp_path / "q"), QuantizeSettings(variants=["float32"]))
    assert manifest.warnings == [warning]  # the evaluator puts the manifest's warnings in its summary and report
    # A loss that moves is no warning.
    assert training.loss_stalled([2.3, 2.0, 1.7, 1.5, 1.3, 1.2, 1.1, 1.0], "float") is None


# ---- selection as a deployer would make it ------------------------------------------------
@pytest.mark.fast
def test_sizes_within_the_tolerance_are_ties_won_by_integer_compute_then_by_the_metric():
    from tfx_quantization.tflite_evaluator import gate

    # The run: dynamic_range (int8 weights, float compute) 8 bytes smaller than integer_only.
    figures = {"dynamic_range": dict(size_bytes=24_392, accuracy=0.95, integer_compute_fraction=0.0),
               "integer_only": dict(size_bytes=24_400, accuracy=0.95, integer_compute_fraction=1.0)}
    passed = {n: {"passed": True} for n in figures}
    chosen, record = gate.select(figures, passed, GateSettings())
    assert chosen == "integer_only" and record["smallest"] == "dynamic_range"
    assert record["tied"] == ["dynamic_range", "integer_only"] and "larger integer-compute fraction" in record["why"]
    # Both integer: integer_only at 0.878 is 560 bytes smaller than qat_int8 at 0.942; the metric decides.
    figures = {"integer_only": dict(size_bytes=24_400, accuracy=0.878, integer_compute_fraction=1.0),
               "qat_int8": dict(size_bytes=24_960, accuracy=0.942, integer_compute_fraction=1.0)}
    assert gate.select(figures, {n: {"passed": True} for n in figures}, GateSettings())[0] == "qat_int8"
    # The bundled digits run: qat_int8 one eval example better (0.17 pp, within max_accuracy_drop, what
    # the gate calls no loss) and 392 bytes larger: a tie on the metric too, so the smaller file ships.
    digits = {"integer_only": dict(size_bytes=43_456, accuracy=0.9777, integer_compute_fraction=1.0),
              "qat_int8": dict(size_bytes=43_848, accuracy=0.9794, integer_compute_fraction=1.0)}
    chosen, record = gate.select(digits, {n: {"passed": True} for n in digits}, GateSettings())
    assert chosen == "integer_only" and record["tied"] == ["integer_only", "qat_int8"], record
    assert "within max_accuracy_drop 0.01 are ties" in record["why"]
    assert gate.select(digits, {n: {"passed": True} for n in digits},
                       GateSettings(max_accuracy_drop=0.001))[0] == "qat_int8"
    # Beyond the tolerance, size decides; with no tolerance, the smallest file wins as before.
    assert gate.select(figures, {n: {"passed": True} for n in figures},
                       GateSettings(size_tie_tolerance=0.01))[0] == "integer_only"
    figures["integer_only"]["size_bytes"] = 20_000
    assert gate.select(figures, {n: {"passed": True} for n in figures}, GateSettings())[0] == "integer_only"
    # fastest: tied latencies are ranked the same way.
    figures = {"dynamic_range": dict(size_bytes=10, latency_ms_median=1.00, accuracy=0.9, integer_compute_fraction=0.0),
               "integer_only": dict(size_bytes=20, latency_ms_median=1.02, accuracy=0.9, integer_compute_fraction=1.0)}
    assert gate.select(figures, {n: {"passed": True} for n in figures}, GateSettings(selection="fastest"))[0] == \
        "integer_only"


# ---- messages that name the fix -----------------------------------------------------------
def test_png_bytes_in_an_input_without_an_image_declaration_name_the_image_setting(tmp_path):
    from data.examples.digits_to_tfrecord import png_examples
    from tests.helpers import write_split

    write_split(tmp_path / "Split-train", list(png_examples(digits_rows()[:20])))
    spec = ModelSpec.of_contract(ModelContract(inputs={"image": {"features": ["image_raw"], "shape": [8, 8, 1]}},
                                               num_classes=10))
    with pytest.raises(ValueError) as raised:
        data.check_examples(data.split_files(tmp_path / "Split-train"), spec)
    message = str(raised.value)
    assert ("input feature 'image_raw' holds encoded PNG/JPEG images, but input 'image' declares no image decoding: "
            "set contract.inputs.image.image") in message and "holds text" not in message


@pytest.mark.fast
def test_no_variant_can_pass_is_said_only_when_none_can():
    from tfx_quantization.tflite_evaluator import gate

    cfg = GateSettings()  # 1 pp, upper bound of the 90% interval
    # 182 examples at 0.95: agreeing with the float model everywhere is not enough, gaining examples is.
    warning = gate.resolution_warning(182, 0.95, cfg)
    assert "too few to resolve" in warning and "no variant can pass" not in warning
    assert "only a variant that is right on examples the float model gets wrong can pass" in warning
    right = int(round(0.95 * 182))
    gained = gate.judge({"integer_only": dict(accuracy=1.0, vs_float=gate.comparison([right, 0, 182 - right, 0], cfg),
                                              integer_compute_fraction=1.0)}, 0.95, cfg)
    assert gained["integer_only"]["passed"]
    # 55 examples at 0.98: not even a variant right on every example passes.
    assert "so no variant can pass" in gate.resolution_warning(55, 0.98, cfg)


# ---- recurrent layers: converted through a fixed-batch signature ---------------------------
LSTM_MODEL = """
def build_model(input_shape, num_classes, input_name, output_name):
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    x = keras.layers.Rescaling(1 / 16)(inputs)
    x = keras.layers.LSTM(32)(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name=output_name)(x))
"""


def test_an_lstm_converts_through_a_batch_1_signature_and_integer_only_passes_the_gate(tmp_path, digits_examples):
    from tfx_quantization.quantization.interpreter import TFLiteRunner

    contract = ModelContract(inputs={"image": {"features": PIXEL_KEYS, "shape": [8, 8]}}, num_classes=10)
    result = training.train(_split(digits_examples, "train"), _split(digits_examples, "eval"), str(tmp_path / "model"),
                            None, str(tmp_path / "logs"),
                            TrainSettings(module_file=_module(tmp_path, LSTM_MODEL), epochs=25, learning_rate=3e-3,
                                          seed=0), contract)
    assert result.float_accuracy > 0.9
    manifest = build.quantize_all(str(tmp_path / "model"), str(tmp_path / "q"),
                                  QuantizeSettings(variants=["float32", "integer_only"]),
                                  calibration_files=_calibration(digits_examples, tmp_path / "cal"))
    assert manifest.built() == ["float32", "integer_only"] and manifest.warnings == []
    entry = manifest.variants["integer_only"]
    assert entry.inputs[0].shape == [1, 8, 8] and "UNIDIRECTIONAL_SEQUENCE_LSTM" in entry.op_counts
    assert entry.inputs[0].dtype == "int8" and entry.integer_compute_fraction == 1.0
    runner = TFLiteRunner(str(tmp_path / "q" / entry.file))
    assert runner.fixed_batch == 1 and runner.predict(np.zeros([3, 8, 8], np.float32)).shape == (3, 10)

    ev = evaluate.evaluate_models(_split(digits_examples, "eval"), str(tmp_path / "model"), str(tmp_path / "q"),
                                  str(tmp_path / "ev"), GATE)
    assert ev.variants["float32"]["accuracy"] == pytest.approx(ev.float_model["accuracy"], abs=2 / 599)
    assert ev.variants["integer_only"]["accuracy"] >= ev.float_model["accuracy"] - 0.03
    assert ev.selected_variant == "integer_only" and ev.blessed


def test_the_selective_search_converts_an_lstm_through_the_same_batch_1_retry(tmp_path, digits_examples,
                                                                                digits_calibration):
    """The search calibrates, ranks layers (QuantizationDebugger) and quantizes through the
    conversion every variant uses, so a recurrent model reaches it instead of failing on
    the unknown batch size. Untrained: the search's budget is opened wide, only the
    conversion path is under test."""
    contract = ModelContract(inputs={"image": {"features": PIXEL_KEYS, "shape": [8, 8]}}, num_classes=10)
    spec = data.check_examples(data.split_files(_split(digits_examples, "eval")), ModelSpec.of_contract(contract))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="image")
    x = keras.layers.LSTM(8)(keras.layers.Rescaling(1 / 16)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="probabilities")(x))
    training.save_serving_model(model, str(tmp_path / "model"), spec)
    manifest = build.quantize_all(
        str(tmp_path / "model"), str(tmp_path / "q"),
        QuantizeSettings(variants=["selective_integer"], search_max_drop=1.0, validation_samples=60),
        calibration_files=data.split_files(f"{digits_calibration}/Split-calibration"),
        validation_files=data.split_files(_split(digits_examples, "eval")), contract=contract)
    entry = manifest.variants["selective_integer"]
    assert entry.status == "ok", entry.reason
    assert entry.inputs[0].shape == [1, 8, 8] and "UNIDIRECTIONAL_SEQUENCE_LSTM" in entry.op_counts
    assert entry.selective.layer_errors and entry.selective.steps[0].num_float_layers == 0


# ---- what the untrained model already shows: checked before any epoch is spent ------------------
NESTED_MODEL = """
def build_model(input_shape, num_classes, input_name, output_name, **kwargs):
    inner = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(32, activation="relu")], name="features")
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name=output_name)(inner(inputs)))
"""


def test_a_nested_model_records_qat_failed_before_float_training_starts(tmp_path, digits_examples, caplog):
    import logging

    qat_dir = tmp_path / "qat_model"
    with caplog.at_level(logging.INFO, logger="tfx_quantization"):
        result = training.train(_split(digits_examples, "train"), _split(digits_examples, "eval"),
                                str(tmp_path / "model"), str(qat_dir), str(tmp_path / "logs"),
                                TrainSettings(module_file=_module(tmp_path, NESTED_MODEL), epochs=1, seed=0),
                                DIGITS_CONTRACT)
    reason = ("the model nests model(s) ['features'] as layers; tfmot cannot quantize nested models: build the inner "
              "model's layers directly on the outer input (see components/models)")
    assert result.qat_failure == reason and result.qat_accuracy is None  # the float model was trained and saved
    assert os.path.exists(tmp_path / "model" / "saved_model.pb")
    assert contracts.read_qat_failure(str(qat_dir)) == reason
    said = [r.getMessage() for r in caplog.records]
    warned = next(i for i, m in enumerate(said) if reason in m and m.startswith("QAT cannot run"))
    trained = next(i for i, m in enumerate(said) if m.startswith("float training of"))
    assert warned < trained, said  # said and recorded before the first epoch, not after training
    assert not any(m.startswith("qat training of") for m in said)  # no QAT epoch spent
    manifest = build.quantize_all(str(tmp_path / "model"), str(tmp_path / "q"),
                                  QuantizeSettings(variants=["float32", "qat_int8"]), qat_model_dir=str(qat_dir))
    assert manifest.built() == ["float32"] and reason in manifest.variants["qat_int8"].reason
    assert manifest.warnings == [f"quantization-aware training failed, so qat_int8 was not built: {reason}"]


UNCONVERTIBLE_MODEL = """
import tensorflow as tf


def build_model(input_shape, num_classes, input_name, output_name, **kwargs):
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    # A string round trip: no TFLite builtin, and the pipeline never enables TensorFlow ops.
    x = keras.layers.Lambda(lambda t: tf.strings.to_number(tf.strings.as_string(t)))(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name=output_name)(x))
"""


def test_a_model_tflite_cannot_convert_stops_before_training_with_the_op_and_the_fix(tmp_path, digits_examples,
                                                                                   caplog):
    import logging

    module = _module(tmp_path, UNCONVERTIBLE_MODEL)
    with pytest.raises(ValueError) as raised, caplog.at_level(logging.INFO, logger="tfx_quantization"):
        training.train(_split(digits_examples, "train"), _split(digits_examples, "eval"), str(tmp_path / "model"),
                       None, str(tmp_path / "logs"), TrainSettings(module_file=module, epochs=1, seed=0),
                       DIGITS_CONTRACT)
    assert str(raised.value) == (
        f"the model of module_file {module} does not convert to TFLite (checked before training, untrained): op(s) "
        "tf.AsString, tf.StringToNumber have no TFLite builtin kernel (TensorFlow ops are not enabled): replace them "
        "with ops TFLite supports (https://www.tensorflow.org/lite/guide/ops_compatibility)")
    assert not any(r.getMessage().startswith("float training of") for r in caplog.records)
    assert not os.path.exists(tmp_path / "model" / "saved_model.pb")


# ---- a variant the inputs rule out is skipped: not built, not an error ---------------------------
def _summary_of(tmp_path, ev):
    """The end-of-run summary of evaluation `ev` (written in tmp_path / 'ev'), as `make run` prints it."""
    from tests.helpers import run_summary

    fig = ev.selected_figures()
    return run_summary(tmp_path / "metadata.sqlite", tmp_path / "ev", {
        contracts.SELECTED_VARIANT: ev.selected_variant, contracts.FLOAT_ACCURACY: ev.float_model["accuracy"],
        contracts.SELECTED_ACCURACY: fig["accuracy"], contracts.SELECTED_ACCURACY_DROP: fig["accuracy_drop"],
        contracts.SELECTED_SIZE_BYTES: fig["size_bytes"], contracts.SELECTED_LATENCY_MS: fig["latency_ms_median"]})


def test_a_search_without_a_validation_split_is_skipped_not_failed_through_gate_report_and_summary(
        tmp_path, trained_digits, digits_calibration, digits_examples):
    from tfx.types import standard_artifacts

    from tfx_quantization.post_training_quantizer.executor import Executor
    from tests.helpers import artifact

    calibration = artifact(standard_artifacts.Examples, digits_calibration)
    calibration.split_names = '["calibration"]'
    # A stock ExampleGen's train/eval output as the validation examples, the search asked for by name.
    Executor().Do({"model": [artifact(standard_artifacts.Model, trained_digits["model_uri"])],
                   "representative_dataset": [calibration], "validation_examples": [digits_examples]},
                  {"quantized_models": [artifact(standard_artifacts.Model, tmp_path / "q")]},
                  {"settings": json.dumps({"variants": ["integer_only", "selective_integer"]})})
    manifest = contracts.read_manifest(str(tmp_path / "q"))
    reason = ("the validation examples have no 'validation' split (they have ['train', 'eval']); give ExampleGen a "
              "held-out 'validation' split (its output_config) or set the quantizer's validation_split to a split "
              "training never saw")
    selective = manifest.variants["selective_integer"]
    assert (selective.status, selective.reason) == ("skipped", reason)
    assert manifest.built() == ["integer_only"] and manifest.warnings == []  # not a failure: nothing to warn about

    ev = evaluate.evaluate_models(_split(digits_examples, "eval"), trained_digits["float"], str(tmp_path / "q"),
                                  str(tmp_path / "ev"), GATE)
    assert "selective_integer" not in ev.variants and "selective_integer" not in ev.verdicts  # never judged
    assert ev.manifest["selective_integer"].status == "skipped" and ev.selected_variant == "integer_only"
    decision = contracts.read_decision(str(tmp_path / "ev"))
    assert decision.skipped == {"selective_integer": reason} and not any("selective_integer" in w for w in decision.why)
    report = (tmp_path / "ev" / "report.html").read_text()
    assert ('<tr class="skipped"><td class="name">selective_integer</td>' in report
            and f"<td>skipped</td><td class=\"text\">not built, not an error: {reason}" in report.replace("&#39;", "'"))
    lines = _summary_of(tmp_path, ev)
    assert f"Skipped          : selective_integer: {reason}" in lines
    assert not any("selective_integer" in line for line in lines if not line.startswith("Skipped"))


# ---- a calibration sample far below its size is a warning the run hears --------------------------
def test_a_calibration_sample_far_below_its_size_reaches_the_manifest_report_outcome_and_summary(
        tmp_path, trained_digits, digits_examples):
    examples = write_examples(tmp_path / "examples", rows=digits_rows()[:60])  # 40 train examples
    sampling.run_sampling(_split(examples, "train"), str(tmp_path / "cal"),
                          CalibrationSettings(num_samples=1000, label_key="label", seed=0))
    warning = ("the calibration sample holds 40 example(s), far below num_samples=1000 (the split has 40 usable "
               "example(s)): the int8 ranges rest on these few; sample a larger split (source_split) or lower "
               "num_samples")
    manifest = build.quantize_all(trained_digits["float"], str(tmp_path / "q"),
                                  QuantizeSettings(variants=["integer_only"]),
                                  calibration_files=data.split_files(tmp_path / "cal" / "Split-calibration"))
    assert manifest.warnings == [warning]
    ev = evaluate.evaluate_models(_split(digits_examples, "eval"), trained_digits["float"], str(tmp_path / "q"),
                                  str(tmp_path / "ev"), GATE)
    assert warning in ev.warnings and warning in contracts.read_decision(str(tmp_path / "ev")).warnings
    assert warning in (tmp_path / "ev" / "report.html").read_text().replace("&#39;", "'")
    assert f"WARNING          : {warning}" in _summary_of(tmp_path, ev)


# ---- a device check that fails is that variant's failure on that target -------------------------
def test_a_device_check_that_fails_is_recorded_for_that_target_and_the_run_goes_on(
        tmp_path, trained_digits, digits_calibration, digits_examples, monkeypatch):
    from tfx_quantization.quantization import micro

    build.quantize_all(trained_digits["float"], str(tmp_path / "q"), QuantizeSettings(variants=["integer_only"]),
                       calibration_files=data.split_files(f"{digits_calibration}/Split-calibration"))
    # The real TFLite Micro child process, given no time: the check itself fails (as a hung or
    # crashing runtime would), instead of answering whether the model runs.
    monkeypatch.setattr(micro, "CHILD_TIMEOUT_S", 0.01)
    gate_settings = GATE.model_copy(update={"targets": [{"name": "cpu", "runtime": "litert"},
                                                        {"name": "mcu", "runtime": "tflm"}]})
    ev = evaluate.evaluate_models(_split(digits_examples, "eval"), trained_digits["float"], str(tmp_path / "q"),
                                  str(tmp_path / "ev"), GateSettings.model_validate(gate_settings.model_dump()))
    tflm = ev.variants["integer_only"]["tflm"]
    assert tflm["runs"] is False and tflm["reason"].startswith("the TFLite Micro check failed: TimeoutExpired: ")
    assert tflm["reason"].endswith("timed out after 0.01 seconds") and "\n" not in tflm["reason"]
    assert ev.targets["mcu"].selected is None
    assert ev.targets["mcu"].verdicts["integer_only"].reasons == [f"does not run on TFLite Micro: {tflm['reason']}"]
    assert ev.targets["cpu"].selected == "integer_only" and ev.blessed  # the primary target and the gate went on
