"""QATTrainer: executor on the real digits data, selective QAT, MobileNetV2, bad inputs."""
import json
import os
import re
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tfx.types import standard_artifacts
from tfx.utils import path_utils

from tfx_quantization.quantization import convert, data
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.quantization.interpreter import TFLiteRunner, accuracy
from tfx_quantization import contracts
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.settings import SettingsError, TrainSettings
from tfx_quantization import training
from tfx_quantization.quantization import qat as qat_lib
from tfx_quantization.tfx_utils import read_contract
from tfx_quantization.trainer.component import QATTrainer
from tfx_quantization.trainer.executor import Executor
from tests.helpers import DIGITS_CONTRACT, PIXEL_KEYS, artifact, write_examples


def _props(contract=None, **overrides):
    """The executor's parameters: TrainSettings and the contract as JSON, written by hand so
    that bad values reach the executor's own decoding."""
    settings = dict(epochs=5, qat_epochs=1, seed=1)
    settings.update(overrides)
    return {"settings": json.dumps(settings), "contract": json.dumps(contract or DIGITS_CONTRACT.model_dump())}


def _run_executor(tmp_path, examples, contract=None, **overrides):
    outputs = {
        "model": [artifact(standard_artifacts.Model, tmp_path / "model")],
        "qat_model": [artifact(standard_artifacts.Model, tmp_path / "qat_model")],
        "model_run": [artifact(standard_artifacts.ModelRun, tmp_path / "model_run")],
    }
    Executor().Do({"examples": [examples]}, outputs, _props(contract, **overrides))
    return {k: v[0] for k, v in outputs.items()}


def _eval_arrays(examples, spec):
    files = data.split_files(f"{examples.uri}/Split-eval")
    return data.parse_numpy(list(data.iter_serialized(files)), spec)


def test_executor_produces_float_and_qat_models_whose_int8_conversion_keeps_accuracy(tmp_path, digits_examples):
    out = _run_executor(tmp_path, digits_examples)
    float_dir = path_utils.serving_model_dir(out["model"].uri)
    qat_dir = path_utils.serving_model_dir(out["qat_model"].uri)
    for d in (float_dir, qat_dir):
        assert os.path.exists(os.path.join(d, "saved_model.pb"))
    float_acc = out["model"].get_float_custom_property("eval_accuracy")
    qat_acc = out["qat_model"].get_float_custom_property("eval_accuracy")
    assert float_acc > 0.9 and qat_acc > 0.9
    assert json.loads(out["qat_model"].get_string_custom_property("float_layers")) == []
    assert os.listdir(out["model_run"].uri)  # TensorBoard logs

    spec = ModelSpec.read(qat_dir)
    # The spec is read back from the signature and the contract recorded next to the model.
    assert spec.input_shape == [8, 8, 1] and spec.num_classes == 10 and spec.feature_keys == PIXEL_KEYS
    assert os.path.exists(os.path.join(qat_dir, contracts.MODEL_CONTRACT_FILE))
    # ...and on both Model artifacts, resolved (the output name), for the later stages.
    recorded = read_contract(out["model"])
    assert recorded == read_contract(out["qat_model"]) == ModelContract.of_spec(spec)
    assert recorded.inputs["image"].features == PIXEL_KEYS and recorded.output == "probabilities"
    spec = data.check_examples(data.split_files(f"{digits_examples.uri}/Split-eval"), spec)
    x, y = _eval_arrays(digits_examples, spec)
    x = x["image"]

    # The QAT SavedModel reloads, through its serving signature and as a Keras model.
    serving = tf.saved_model.load(qat_dir).signatures["serving_default"]
    probs = serving(image=tf.constant(x))["probabilities"].numpy()
    assert probs.shape == (len(y), 10)
    with tfmot.quantization.keras.quantize_scope():
        reloaded = keras.models.load_model(qat_dir)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), probs, atol=1e-5)

    # Converted to an int8 TFLite model, it stays within 1 pp of the float model.
    calibration = data.representative_dataset(
        data.split_files(f"{digits_examples.uri}/Split-train"), spec, max_samples=100)
    tflite = convert.convert(convert.QAT_INT8, qat_dir, calibration)
    runner = TFLiteRunner(tflite)
    assert runner.input["dtype"] == np.int8
    float_probs = tf.saved_model.load(float_dir).signatures["serving_default"](image=tf.constant(x))["probabilities"]
    float_model_acc = accuracy(float_probs.numpy(), y)
    assert accuracy(runner.predict(x), y) >= float_model_acc - 0.01


USER_MODULE = textwrap.dedent(
    """
    import tf_keras as keras

    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    def build_model(input_shape, num_classes, input_name, output_name, **kwargs):
        inputs = keras.Input(shape=tuple(input_shape), name=input_name)
        x = keras.layers.Rescaling(1.0 / 16, name="rescale")(inputs)
        x = Doubler(name="doubler")(x)
        x = keras.layers.Conv2D(8, 3, activation="relu")(x)
        x = keras.layers.Flatten()(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax", name=output_name)(x)
        return keras.Model(inputs, outputs)
    """
)


def test_selective_qat_leaves_unsupported_layers_float_and_lists_them(tmp_path, digits_examples):
    module = tmp_path / "user_model.py"
    module.write_text(USER_MODULE)
    out = _run_executor(tmp_path, digits_examples, module_file=str(module), epochs=2, qat_epochs=1)
    assert json.loads(out["qat_model"].get_string_custom_property("float_layers")) == ["rescale", "doubler"]
    qat_dir = path_utils.serving_model_dir(out["qat_model"].uri)
    with open(os.path.join(qat_dir, contracts.QAT_FLOAT_LAYERS_FILE)) as f:
        assert json.load(f) == ["rescale", "doubler"]
    assert out["qat_model"].get_float_custom_property("eval_accuracy") > 0.8


def test_selective_qat_copies_the_float_weights():
    inputs = keras.Input((4,))
    x = keras.layers.Rescaling(0.5)(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    qat, left = qat_lib.quantization_aware_copy(model)
    assert left == [model.layers[1].name]
    x = np.random.RandomState(0).uniform(-1, 1, (64, 4)).astype("float32")
    # Before any fine-tuning the QAT copy computes what the float model computes, up to
    # 8-bit fake quantization of weights and activations.
    np.testing.assert_allclose(qat.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.05)


def test_model_with_no_quantizable_layer_is_a_clear_error():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Rescaling(0.5)(inputs))
    with pytest.raises(ValueError, match="no layer of model .* can be quantized"):
        qat_lib.quantization_aware_copy(model)


def test_mobilenet_v2_style_model_trains_and_qat_wraps(digits_examples):
    from tfx_quantization.models import mobilenet_v2

    spec = ModelSpec.single(PIXEL_KEYS, [8, 8, 1], "label", 10, feature_dtypes={k: "int64" for k in PIXEL_KEYS})
    ds = data.make_dataset(data.split_files(f"{digits_examples.uri}/Split-train"), spec, 16, repeat=True)
    model = mobilenet_v2([8, 8, 1], 10, alpha=0.35, image_size=32)
    assert model.get_layer("upsample").output_shape == (None, 32, 32, 1)
    # Five steps, run eagerly: tracing MobileNetV2's training step (and again the QAT copy's)
    # took about 2.5 minutes of this test, the steps themselves seconds. The subject is that
    # the architecture trains with our compile and that tfmot wraps it, not tf.function.
    training._compile(model, 1e-3)
    model.run_eagerly = True
    model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0)
    qat, left_float = qat_lib.quantization_aware_copy(model)
    assert left_float == []  # BatchNormalization is folded into the convolutions, not left float
    wrapped = [l for l in qat.layers if type(l).__name__ == "QuantizeWrapperV2"]
    assert len(wrapped) > 50  # every conv, depthwise conv and dense layer is quantization-aware
    training._compile(qat, 1e-4)
    qat.run_eagerly = True
    history = qat.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_same_seed_gives_same_metrics(tmp_path, digits_examples):
    cfg = TrainSettings(epochs=1, steps_per_epoch=15, qat_epochs=1, qat_steps_per_epoch=5, seed=3)
    split = lambda s: f"{digits_examples.uri}/Split-{s}"  # noqa: E731
    results = [
        training.train(split("train"), split("eval"), str(tmp_path / f"f{i}"), str(tmp_path / f"q{i}"),
                       str(tmp_path / f"l{i}"), cfg, DIGITS_CONTRACT)
        for i in range(2)
    ]
    assert results[0].float_accuracy == pytest.approx(results[1].float_accuracy, abs=1e-6)
    assert results[0].qat_accuracy == pytest.approx(results[1].qat_accuracy, abs=1e-6)


@pytest.fixture(scope="module")
def image_examples(tmp_path_factory):
    """Examples with one 64-value `image` feature, for shape checks."""
    from tests.helpers import digits_rows

    rows = [{"image": [r[k] for k in PIXEL_KEYS], "label": r["label"]} for r in digits_rows()[:90]]
    return write_examples(tmp_path_factory.mktemp("image_examples"), rows=rows)


IMAGE_INPUT = {"image": {"features": ["image"], "shape": [8, 8, 1]}}


@pytest.mark.parametrize(
    "contract, settings, message",
    [
        (dict(label_key="digit"), {}, "label 'digit' is missing: 60 of 60 example(s)"),
        (dict(inputs={"image": {"features": ["image"], "shape": [8, 8, 2]}}), {},
         "input feature 'image' holds 64 values, input 'image' [8, 8, 2] needs 128"),
        ({}, dict(model="resnet9000"), "model 'resnet9000' is not a built-in model"),
        (dict(label_key="image"), {}, "label_key 'image' also feeds input 'image'"),
        ({}, dict(epochs=0), "epochs = 0: Input should be greater than or equal to 1"),
        (dict(num_classes=None), {}, "contract.num_classes is not set: the built-in trainer needs"),
    ],
)
def test_bad_parameters_name_the_problem(tmp_path, image_examples, contract, settings, message):
    contract = {"inputs": IMAGE_INPUT, "num_classes": 10, **contract}
    with pytest.raises(ValueError, match=re.escape(message)):
        _run_executor(tmp_path, image_examples, contract=contract, **settings)


def test_empty_split_names_the_problem(tmp_path):
    examples = write_examples(tmp_path / "ex", rows=[])
    with pytest.raises(ValueError, match="is empty: it holds no examples"):
        _run_executor(tmp_path, examples)


def test_user_module_without_builder_names_the_problem(tmp_path, digits_examples):
    module = tmp_path / "no_builder.py"
    module.write_text("def something_else():\n    pass\n")
    with pytest.raises(ValueError, match="has no function build_model"):
        _run_executor(tmp_path, digits_examples, module_file=str(module))


def test_component_checks_arguments_early():
    from tfx.types import channel_utils

    examples = channel_utils.as_channel([standard_artifacts.Examples()])
    with pytest.raises(ValueError, match="model 'nope' is not a built-in model"):
        QATTrainer(examples=examples, contract=DIGITS_CONTRACT, settings=TrainSettings.build(model="nope"))
    with pytest.raises(SettingsError, match=r"QATTrainer: contract.inputs.image.shape is not set"):
        QATTrainer(examples=examples, contract={"inputs": {"image": {"features": PIXEL_KEYS}}, "num_classes": 10})
    with pytest.raises(SettingsError, match=r"ModelContract: num_classes = 1: Input should be greater"):
        QATTrainer(examples=examples, contract={"inputs": IMAGE_INPUT, "num_classes": 1})
    # Settings and contract as dicts, validated like the objects.
    component = QATTrainer(examples=examples, contract=DIGITS_CONTRACT.model_dump(), settings={"epochs": 3})
    assert set(component.outputs) == {"model", "qat_model", "model_run"}
    assert TrainSettings.from_json(component.exec_properties["settings"]).epochs == 3
    assert ModelContract.from_json(component.exec_properties["contract"]) == DIGITS_CONTRACT


def test_int_and_float_columns_mixed_train_and_record_their_dtypes(tmp_path):
    """CsvExampleGen types each column on its own: some int64, some float."""
    rows = [dict(r, **{k: float(r[k]) + 0.5 for k in PIXEL_KEYS[:20]}) for r in __import__(
        "tests.helpers", fromlist=["digits_rows"]).digits_rows()[:150]]
    examples = write_examples(tmp_path / "ex", rows=rows)
    cfg = TrainSettings(epochs=1, steps_per_epoch=3, qat_epochs=1, qat_steps_per_epoch=2)
    split = lambda s: f"{examples.uri}/Split-{s}"  # noqa: E731
    result = training.train(split("train"), split("eval"), str(tmp_path / "f"), None, str(tmp_path / "l"), cfg,
                            DIGITS_CONTRACT)
    dtypes = result.spec.input().feature_dtypes
    assert dtypes["pixel_00"] == "float32" and dtypes["pixel_63"] == "int64"
    assert 0.0 <= result.float_accuracy <= 1.0


def _quant_var(model, name):
    return [w for w in model.weights if w.name.endswith(name)][0].numpy()


def test_qat_activation_ranges_start_at_the_float_model_ranges():
    """tfmot starts every activation range at [-6, 6]; the copy starts from what the float
    model reaches on the data, so logits beyond 6 are not clipped and small activations get
    all 256 steps."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, name="logits", kernel_initializer=keras.initializers.Constant(5.0))(hidden)
    model = keras.Model(inputs, outputs)
    x = np.random.RandomState(0).uniform(-1, 1, (64, 4)).astype("float32")
    qat, _ = qat_lib.quantization_aware_copy(model)
    assert _quant_var(qat, "quant_logits/post_activation_max:0") == 6.0  # tfmot's start
    assert qat_lib.initialize_quantization_ranges(qat, [x[:32], x[32:]]) == 3  # input, hidden, logits
    hidden_out = keras.Model(inputs, hidden).predict(x, verbose=0)
    logits = model.predict(x, verbose=0)
    assert logits.max() > 6
    np.testing.assert_allclose(_quant_var(qat, "quant_hidden/post_activation_max:0"), hidden_out.max(), rtol=1e-5)
    np.testing.assert_allclose(_quant_var(qat, "quant_logits/post_activation_min:0"), min(logits.min(), 0), rtol=1e-5)
    np.testing.assert_allclose(_quant_var(qat, "quant_logits/post_activation_max:0"), logits.max(), rtol=1e-5)
    # The quantizers compute again after the recording (the copy's output is not the float one).
    assert np.abs(qat(x, training=False).numpy() - logits).max() > 0


def test_qat_keeps_in_model_normalization_float_and_qat_mixed_converts_it_so(tmp_path):
    """Raw features of very different scales, normalized inside the model: the QAT copy
    normalizes as the float model does (no int8 step on the raw input), and qat_mixed keeps
    the normalization float with int8 after it, while qat_int8 (integer input) cannot."""
    rng = np.random.RandomState(0)
    scales = np.array([500.0, 0.5], np.float32)
    z = rng.standard_normal((512, 2)).astype("float32")
    y = (z[:, 0] + z[:, 1] > 0).astype("int64")
    x = z * scales
    keras.utils.set_random_seed(0)
    inputs = keras.Input((2,), name="features")
    norm = keras.layers.Normalization(name="normalize")
    h = keras.layers.Dense(16, activation="relu")(norm(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="probabilities")(h))
    norm.adapt(x)
    training._compile(model, 1e-2)
    model.fit(x, y, epochs=20, batch_size=64, verbose=0)
    float_acc = float(np.mean(model.predict(x, verbose=0).argmax(-1) == y))
    assert float_acc > 0.95

    qat, left_float = qat_lib.quantization_aware_copy(model)
    assert left_float == ["normalize"]
    qat_lib.initialize_quantization_ranges(qat, [x])
    assert float(np.mean(qat.predict(x, verbose=0).argmax(-1) == y)) >= float_acc - 0.02
    spec = ModelSpec.single(["f0", "f1"], [2], "label", 2, input_name="features")
    training.save_serving_model(qat, tmp_path / "qat", spec)
    rep = lambda: ({"features": x[i:i + 1]} for i in range(0, 512, 8))  # noqa: E731
    mixed = convert.convert(convert.QAT_MIXED, str(tmp_path / "qat"), rep)
    ops = [op["op_name"] for op in tf.lite.Interpreter(model_content=mixed)._get_ops_details()]
    assert ops[:3] == ["SUB", "MUL", "QUANTIZE"] and ops.count("FULLY_CONNECTED") == 2, ops
    info = convert.describe(mixed)
    assert info["inputs"][0]["dtype"] == "float32" and set(info["float_ops"]) == {"SUB", "MUL", "QUANTIZE", "DEQUANTIZE"}
    assert accuracy(TFLiteRunner(mixed).predict(x), y) >= float_acc - 0.02
    # Arithmetic done in integer: 2x16 + 16x2 multiply-accumulates and the 2-element softmax,
    # against the float SUB and MUL on the 2 raw features (4 of 6 ops by count).
    assert convert.integer_compute_fraction(mixed) == pytest.approx(66 / 70)
    integer = accuracy(TFLiteRunner(convert.convert(convert.QAT_INT8, str(tmp_path / "qat"), rep)).predict(x), y)
    assert integer < float_acc - 0.1  # one int8 scale for both raw features loses the small one
