"""The model contract is read from the model: any SavedModel signature (named, several
inputs, int and float features, logits), and encoded images decoded by a declared
preprocessing that runs the same in training, calibration and evaluation. It travels with
the model: given once, recorded on the Model artifacts, read by every later stage; an
explicit contract overrides the recorded one."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfx.types import standard_artifacts

from tfx_quantization import contracts
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.post_training_quantizer import build
from tfx_quantization.post_training_quantizer.executor import Executor as QuantizerExecutor
from tfx_quantization.qat_fine_tuner.executor import Executor as FineTunerExecutor
from tfx_quantization.quantization import data
from tfx_quantization.quantization.interpreter import TFLiteRunner
from tfx_quantization.quantization.model_spec import InputSpec, ModelSpec
from tfx_quantization.representative_dataset_gen import sampling
from tfx_quantization.representative_dataset_gen.executor import Executor as CalibrationExecutor
from tfx_quantization.settings import (
    CalibrationSettings, FineTuneSettings, GateSettings, QuantizeSettings, TrainSettings,
)
from tfx_quantization.tflite_evaluator import evaluate
from tfx_quantization.tflite_evaluator.executor import Executor as EvaluatorExecutor
from tfx_quantization.tfx_utils import read_contract, resolve_contract, write_contract
from tfx_quantization import training
from data.examples.digits_to_tfrecord import png_examples
from tests.helpers import PIXEL_KEYS, artifact, digits_rows, write_examples, write_split

FAST_GATE = dict(latency_runs=3, latency_warmup=1)
PNG_CONTRACT = ModelContract(
    inputs={"image": {"features": ["image_raw"], "shape": [8, 8, 1], "image": {"channels": 1}}}, num_classes=10)


def _calibrate(examples_uri, out):
    sampling.run_sampling(f"{examples_uri}/Split-train", str(out),
                          CalibrationSettings(num_samples=100, label_key="label", seed=0))
    return data.split_files(f"{out}/Split-calibration")


# ---- encoded images ------------------------------------------------------------------
@pytest.fixture(scope="module")
def png_digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("png")
    records = list(png_examples(digits_rows()))
    for split, part in (("train", [r for i, r in enumerate(records) if i % 3]),
                        ("eval", [r for i, r in enumerate(records) if not i % 3])):
        write_split(root / f"Split-{split}", part, shards=1)
    return root


def test_png_decoding_matches_the_pixels(png_digits):
    spec = ModelSpec.of_contract(PNG_CONTRACT)
    files = data.split_files(png_digits / "Split-train")
    spec = data.check_examples(files, spec)
    x, y = data.parse_numpy(list(data.iter_serialized(files))[:5], spec)
    train_rows = [r for i, r in enumerate(digits_rows()) if i % 3][:5]
    expected = np.array([[r[k] for k in PIXEL_KEYS] for r in train_rows], np.float32).reshape(5, 8, 8, 1) / 16
    np.testing.assert_allclose(x["image"], expected, atol=0.5 / 255)  # PNG stores round(v * 255 / 16)
    assert list(y) == [r["label"] for r in train_rows]


def test_png_images_train_quantize_and_evaluate_end_to_end(tmp_path, png_digits):
    cfg = TrainSettings(epochs=6, qat_epochs=1, seed=3)
    float_dir, qat_dir = tmp_path / "float", tmp_path / "qat"
    result = training.train(str(png_digits / "Split-train"), str(png_digits / "Split-eval"), str(float_dir),
                            str(qat_dir), str(tmp_path / "logs"), cfg, PNG_CONTRACT)
    assert result.float_accuracy > 0.85
    # The contract recorded next to the model carries the decoding, so no stage needs settings.
    recorded = ModelContract.from_json((float_dir / contracts.MODEL_CONTRACT_FILE).read_text())
    assert recorded.inputs["image"].features == ["image_raw"] and recorded.inputs["image"].image.channels == 1

    manifest = build.quantize_all(str(float_dir), str(tmp_path / "q"), QuantizeSettings(
        variants=["float32", "integer_only", "qat_int8"]), qat_model_dir=str(qat_dir),
        calibration_files=_calibrate(png_digits, tmp_path / "cal"))
    assert manifest.built() == ["float32", "integer_only", "qat_int8"]
    # The .tflite takes the decoded tensor, not the PNG bytes.
    assert manifest.variants["integer_only"].inputs[0].shape == [-1, 8, 8, 1]

    out = evaluate.evaluate_models(str(png_digits / "Split-eval"), str(float_dir), str(tmp_path / "q"),
                                   str(tmp_path / "ev"), GateSettings(**FAST_GATE))
    assert out.float_model["accuracy"] == pytest.approx(result.float_accuracy, abs=1e-6)
    assert out.variants["integer_only"]["accuracy"] > 0.85 and out.blessed


def test_a_png_that_is_not_an_image_is_named_with_its_count(tmp_path):
    records = list(png_examples(digits_rows()[:20]))
    broken = tf.train.Example.FromString(records[7])
    broken.features.feature["image_raw"].bytes_list.value[0] = b"GIF89a..."
    records[7] = broken.SerializeToString()
    write_split(tmp_path / "Split-train", records)
    spec = ModelSpec.of_contract(PNG_CONTRACT)
    with pytest.raises(ValueError, match=r"input feature 'image_raw' is not one PNG or JPEG image .*: 1 of 20 "
                                         r"example\(s\), first at record 3 of Split-train/"):
        data.check_examples(data.split_files(tmp_path / "Split-train"), spec)


# ---- a two-input model with int and float features, logits ------------------------------
def _two_input_rows():
    rows = []
    for r in digits_rows():
        ink = float(sum(r[k] for k in PIXEL_KEYS)) / 1024.0
        rows.append(dict(r, ink=ink))  # pixels stay int64 columns, ink is a float column
    return rows


@pytest.fixture(scope="module")
def two_input_model(tmp_path_factory):
    """A model with inputs `image` (64 int64 pixel columns) and `ink` (one float column),
    ending in logits, exported with a tf.Example-parsing serving_default and a `dense`
    signature, the way TFX modules export them."""
    root = tmp_path_factory.mktemp("two_input")
    examples = write_examples(root / "examples", rows=_two_input_rows(), splits=("train", "validation", "eval"))
    contract = ModelContract(signature="dense", output_kind="logits", inputs={"image": {"features": PIXEL_KEYS}})
    image = keras.Input((8, 8, 1), name="image")
    ink = keras.Input((1,), name="ink")
    x = keras.layers.Rescaling(1 / 16)(image)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(4, activation="relu")(ink)])
    model = keras.Model([image, ink], keras.layers.Dense(10, name="logits")(x))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    spec = ModelSpec.single(PIXEL_KEYS, [8, 8, 1], "label", 10)  # only to read the training data
    spec.inputs.append(InputSpec("ink", ["ink"], [1]))
    files = data.split_files(f"{examples.uri}/Split-train")
    spec = data.check_examples(files, spec)
    keras.utils.set_random_seed(0)
    model.fit(data.make_dataset(files, spec, 32, shuffle=True, seed=0), epochs=5, verbose=0)

    @tf.function(input_signature=[{"image": tf.TensorSpec([None, 8, 8, 1], tf.float32, name="image"),
                                   "ink": tf.TensorSpec([None, 1], tf.float32, name="ink")}])
    def dense(x):
        return {"logits": model(x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def parse(serialized):
        x = data.parse_batch(serialized, spec, with_label=False)
        return {"logits": model(x)}

    model.save(str(root / "model"), save_format="tf", signatures={"serving_default": parse, "dense": dense})
    return {"examples": examples, "dir": str(root / "model"), "contract": contract, "root": root}


def test_two_input_logits_model_is_read_from_its_dense_signature(two_input_model):
    spec = ModelSpec.read(two_input_model["dir"], two_input_model["contract"])
    assert [(i.name, i.shape) for i in spec.inputs] == [("image", [8, 8, 1]), ("ink", [1])]
    assert spec.input("image").features == PIXEL_KEYS and spec.input("ink").features == ["ink"]
    assert spec.output_name == "logits" and spec.output_kind == "logits" and spec.num_classes == 10
    files = data.split_files(f"{two_input_model['examples'].uri}/Split-eval")
    spec = data.check_examples(files, spec)
    assert spec.input("image").feature_dtypes["pixel_00"] == "int64" and spec.input("ink").feature_dtypes == {
        "ink": "float32"}


def test_two_input_model_quantizes_evaluates_and_fine_tunes(tmp_path, two_input_model):
    examples, contract = two_input_model["examples"], two_input_model["contract"]
    split = lambda s: f"{examples.uri}/Split-{s}"  # noqa: E731
    # Quantization-aware fine-tuning of the loaded model, both inputs fed by name.
    tuned = training.fine_tune(two_input_model["dir"], split("train"), split("eval"), str(tmp_path / "qat"),
                               str(tmp_path / "logs"), FineTuneSettings(qat_epochs=1, seed=0), contract)
    assert tuned.qat_accuracy > 0.8 and tuned.float_accuracy > 0.8
    assert ModelSpec.read(str(tmp_path / "qat")).signature == "dense"  # the fine-tuned model keeps the contract

    manifest = build.quantize_all(
        two_input_model["dir"], str(tmp_path / "q"), QuantizeSettings(variants=[
            "float32", "full_integer", "integer_only", "qat_int8", "selective_integer"], max_search_steps=2),
        qat_model_dir=str(tmp_path / "qat"), calibration_files=_calibrate(examples.uri, tmp_path / "cal"),
        validation_files=data.split_files(split("validation")), contract=contract)
    assert manifest.built() == ["float32", "full_integer", "integer_only", "qat_int8",
                                                  "selective_integer"]
    runner = TFLiteRunner(os.path.join(tmp_path / "q", manifest.variants["integer_only"].file),
                          signature="dense")
    assert sorted(runner.inputs) == ["image", "ink"] and runner.output["dtype"] == np.int8

    out = evaluate.evaluate_models(split("eval"), two_input_model["dir"], str(tmp_path / "q"), str(tmp_path / "ev"),
                                   GateSettings(**FAST_GATE), contract=contract)
    # The float reference is the dense signature's argmax over the eval split, computed here by hand.
    files = data.split_files(split("eval"))
    spec = data.check_examples(files, ModelSpec.read(two_input_model["dir"], contract))
    x, y = data.parse_numpy(list(data.iter_serialized(files)), spec)
    logits = data.Serving(two_input_model["dir"], spec)(x)
    assert out.float_model["accuracy"] == pytest.approx(float(np.mean(np.argmax(logits, -1) == y)))
    assert out.variants["integer_only"]["accuracy"] >= out.float_model["accuracy"] - 0.03
    assert json.load(open(tmp_path / "q" / "manifest.json"))["model_spec"]["signature"] == "dense"


# ---- what cannot be handled is named --------------------------------------------------
@pytest.mark.parametrize("contract, message", [
    (ModelContract(), "signature 'serving_default' input 'examples' takes strings (serialized tf.Examples"),
    (ModelContract(signature="serving"), "has no signature 'serving' (it has ['dense', 'serving_default'])"),
    (ModelContract(signature="dense", inputs={"pixels": {}}),
     "contract.inputs names ['pixels'], which signature 'dense' does not take (it takes ['image', 'ink'])"),
    (ModelContract(signature="dense", output="probabilities"),
     "contract.output 'probabilities' is not an output of signature 'dense' (it has ['logits'])"),
    (ModelContract(signature="dense", num_classes=3), "output 'logits' has 10 units for 3 classes"),
    (ModelContract(signature="dense", inputs={"image": {"features": PIXEL_KEYS, "shape": [64]}}),
     "contract.inputs.image.shape is [64], but signature 'dense' input 'image' takes [8, 8, 1]"),
    (None, "no model contract for the model in"),  # not ours, and no contract given
])
def test_what_a_signature_cannot_give_is_a_clear_error(two_input_model, contract, message):
    with pytest.raises(ValueError, match=__import__("re").escape(message)):
        ModelSpec.read(two_input_model["dir"], contract)


def test_binary_classifier_with_one_sigmoid_unit_scores_two_classes():
    spec = ModelSpec.single(["x"], [2], "label", 2, output_name="p")
    assert spec.output_units == 2
    binary = ModelSpec(spec.inputs, "label", 2, output_name="p", output_units=1, output_kind="logits")
    np.testing.assert_allclose(binary.scores(np.array([[0.0], [2.0]])),
                               [[0.5, 0.5], [1 - 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(-2.0))]], rtol=1e-6)
    probs = ModelSpec(spec.inputs, "label", 2, output_name="p", output_units=1)
    np.testing.assert_allclose(probs.scores(np.array([[0.25]])), [[0.75, 0.25]])
    logits = ModelSpec(spec.inputs, "label", 2, output_name="p", output_kind="logits")
    np.testing.assert_allclose(logits.scores(np.array([[0.0, np.log(3.0)]])), [[0.25, 0.75]], rtol=1e-6)


# ---- the contract travels with the model ---------------------------------------------
def _stock_model(root, model_dir):
    """A Model artifact holding `model_dir` the way a stock TFX Trainer leaves it: the
    SavedModel in Format-Serving, no contract recorded anywhere."""
    shutil.copytree(model_dir, root / "Format-Serving")
    model = artifact(standard_artifacts.Model, root)
    assert read_contract(model) is None and not (root / "Format-Serving" / contracts.MODEL_CONTRACT_FILE).exists()
    return model


def test_a_contract_given_once_reaches_calibration_quantizer_and_evaluator(tmp_path, two_input_model):
    """After a stock Trainer, the contract is given to the fine-tuner only. It records the
    resolved contract on its Model artifact; calibration (its label), the quantizer and the
    evaluator read it from there (the files next to the models removed, so nothing else
    can supply it), and the quantizer records it on its output for the evaluator."""
    examples, contract = two_input_model["examples"], two_input_model["contract"]
    float_model = _stock_model(tmp_path / "float", two_input_model["dir"])
    qat_model = artifact(standard_artifacts.Model, tmp_path / "qat")
    FineTunerExecutor().Do(
        {"examples": [examples], "model": [float_model]},
        {"qat_model": [qat_model], "model_run": [artifact(standard_artifacts.ModelRun, tmp_path / "run")]},
        {"settings": FineTuneSettings(qat_epochs=1, qat_steps_per_epoch=5, seed=0).to_json(),
         "contract": contract.to_json()})
    recorded = read_contract(qat_model)
    assert recorded == ModelContract.of_spec(ModelSpec.read(two_input_model["dir"], contract))
    assert recorded.signature == "dense" and recorded.inputs["image"].features == PIXEL_KEYS
    (tmp_path / "qat" / "Format-Serving" / contracts.MODEL_CONTRACT_FILE).unlink()

    calibration = artifact(standard_artifacts.Examples, tmp_path / "calibration")
    CalibrationExecutor().Do({"examples": [examples], "model": [qat_model]},
                             {"representative_dataset": [calibration]}, {"settings": CalibrationSettings().to_json()})
    assert calibration.get_string_custom_property("strategy") == "stratified"  # the label came from the model
    assert sum(json.loads(calibration.get_string_custom_property("per_class_counts")).values()) == 200

    quantized = artifact(standard_artifacts.Model, tmp_path / "quantized")
    QuantizerExecutor().Do(
        {"model": [float_model], "qat_model": [qat_model], "representative_dataset": [calibration]},
        {"quantized_models": [quantized]},
        {"settings": QuantizeSettings(variants=["float32", "integer_only", "qat_int8"]).to_json()})
    assert read_contract(quantized) == recorded

    evaluation = artifact(standard_artifacts.ModelEvaluation, tmp_path / "evaluation")
    blessing = artifact(standard_artifacts.ModelBlessing, tmp_path / "blessing")
    EvaluatorExecutor().Do({"examples": [examples], "model": [float_model], "quantized_models": [quantized]},
                           {"evaluation": [evaluation], "blessing": [blessing]},
                           {"settings": GateSettings(**FAST_GATE).to_json()})
    assert blessing.get_float_custom_property(contracts.FLOAT_ACCURACY) > 0.8  # the dense signature, fed right


def test_an_explicit_contract_overrides_the_recorded_one(tmp_path, two_input_model):
    recorded, explicit = two_input_model["contract"], ModelContract(signature="serving_default")
    float_model = _stock_model(tmp_path / "float", two_input_model["dir"])
    write_contract(float_model, recorded)
    other = artifact(standard_artifacts.Model, tmp_path / "other")
    write_contract(other, ModelContract(label_key="y"))
    assert resolve_contract(None, None, float_model, other) == recorded  # the first that carries one
    assert resolve_contract(None, standard_artifacts.Model(), other) == ModelContract(label_key="y")
    assert resolve_contract(explicit.to_json(), float_model) == explicit
    assert resolve_contract(None, standard_artifacts.Model()) is None
    # The quantizer converts the signature the explicit contract names (one that parses
    # tf.Examples, which TFLite cannot take), not the recorded dense one.
    with pytest.raises(ValueError, match=r"signature 'serving_default' input 'examples' takes strings"):
        QuantizerExecutor().Do({"model": [float_model]},
                               {"quantized_models": [artifact(standard_artifacts.Model, tmp_path / "q")]},
                               {"settings": QuantizeSettings(variants=["float32"]).to_json(),
                                "contract": explicit.to_json()})
