"""A battery of bad inputs through the public interfaces: settings, data files, module
files, the registry CLI and the scheduler. Each case asserts a message that names the
problem and the fix, AND that nothing was pushed or half-written (the registry's files are
byte for byte what they were; the trainer's outputs hold no model)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tfx.types import standard_artifacts

from tfx_quantization import fsutil
from tfx_quantization.registry import Registry
from tfx_quantization.settings import SettingsError
from tfx_quantization.pipeline import preflight
from tfx_quantization.pipeline.config import PipelineConfig
from tests.conftest import REPO_ROOT
from tests.helpers import DIGITS_CONTRACT, PIXEL_KEYS, artifact, digits_rows, write_examples

DIGITS_JOB = str(REPO_ROOT / "data" / "examples" / "digits.yaml")

HEADER = ",".join(PIXEL_KEYS + ["label"])


def snapshot(root: Path):
    """Every file under root with its bytes' sha256: the registry's whole state."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): fsutil.sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def registry(tmp_path):
    """A registry holding one version, to prove that bad input leaves it as it was."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 a model")
    Registry(str(tmp_path / "serving"), "digits").push(str(model), {"variant": "integer_only"})
    root = tmp_path / "serving"
    before = snapshot(root)
    yield root
    assert snapshot(root) == before, "bad input changed the registry"


def _csv(folder: Path, rows, header=HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.csv").write_text(header + "\n" + "\n".join(rows) + ("\n" if rows else ""))
    return folder


def _digits_csv_rows(n=60):
    return [",".join(str(r[k]) for k in PIXEL_KEYS + ["label"]) for r in digits_rows()[:n]]


def _config(tmp_path, registry_root, **env):
    base = {"QP_CONFIG": DIGITS_JOB, "QP_DATA_ROOT": str(REPO_ROOT / "data" / "digits"),
            "QP_OUTPUT_ROOT": str(tmp_path / "out"), "QP_PUSH__DESTINATION": str(registry_root)}
    return PipelineConfig.from_env({**base, **env})


# ---- settings: refused when the configuration is built, before anything runs ---------------
@pytest.mark.parametrize("env, message", [
    ({"QP_MAX_ACCURACY_DROP": "-1"},
     "gate.max_accuracy_drop (QP_GATE__MAX_ACCURACY_DROP) = -1: Input should be greater than or equal to 0"),
    ({"QP_MAX_ACCURACY_DROP": "null", "QP_MAX_RELATIVE_DROP": "null"}, "the gate needs an accuracy bound"),
    ({"QP_MIN_ACCURACY": "1.5"}, "gate.min_accuracy (QP_GATE__MIN_ACCURACY) = 1.5: Input should be less than or equal to 1"),
    ({"QP_VARIANTS": '["int4"]'}, "unknown variant(s) ['int4']: valid variants are ['float32'"),
    ({"QP_SELECTION": "biggest"}, "use 'smallest', 'fastest' or a list of variant names"),
    ({"QP_VARIANTS": '["float32"]', "QP_SELECTION": '["qat_int8"]'},
     "gate.selection names ['qat_int8'], which quantize.variants ['float32'] never builds"),
    ({"QP_EPOCHS": "0"}, "train.epochs (QP_TRAIN__EPOCHS) = 0: Input should be greater than or equal to 1"),
    ({"QP_MAX_ACCURACY_DROPP": "0.1"}, "QP_MAX_ACCURACY_DROPP is not a pipeline setting. Did you mean QP_MAX_ACCURACY_DROP"),
])
def test_bad_settings(tmp_path, registry, env, message):
    with pytest.raises(SettingsError) as e:
        _config(tmp_path, registry, **env)
    assert message in str(e.value)
    assert not (tmp_path / "out").exists()


# ---- data files, module file, destination: refused by the preflight, before any stage ------
def test_missing_data_root(tmp_path, registry):
    config = _config(tmp_path, registry, QP_DATA_ROOT=str(tmp_path / "nowhere"))
    with pytest.raises(preflight.PreflightError, match=r"data_root .*nowhere does not exist: set data_root \(QP_DATA_ROOT, or in the QP_CONFIG file\)"):
        preflight.check(config)


def test_no_file_matches_the_pattern(tmp_path, registry):
    data = _csv(tmp_path / "data", _digits_csv_rows())
    config = _config(tmp_path, registry, QP_DATA_ROOT=str(data), QP_INPUT_PATTERN="span-{SPAN}/*")
    with pytest.raises(preflight.PreflightError, match=r"matches input_pattern 'span-\{SPAN\}/\*'.*fix input_pattern or data_root \(QP_INPUT_PATTERN"):
        preflight.check(config)


def test_empty_csv(tmp_path, registry):
    data = tmp_path / "data"
    data.mkdir()
    (data / "data.csv").write_text("")
    with pytest.raises(preflight.PreflightError, match="data.csv is empty: a CSV input needs a header line"):
        preflight.check(_config(tmp_path, registry, QP_DATA_ROOT=str(data)))


def test_a_csv_with_a_header_and_no_rows_is_refused_before_the_run(tmp_path, registry):
    data = _csv(tmp_path / "data", [])  # the header line only
    (data / "blank.csv").write_text(HEADER + "\n\n\n")  # and one with blank lines after it
    with pytest.raises(preflight.PreflightError, match=r"each of the 2 input files under .* holds a header line and "
                                                       r"no rows: ExampleGen would write empty splits"):
        preflight.check(_config(tmp_path, registry, QP_DATA_ROOT=str(data)))
    (data / "blank.csv").write_text(HEADER + "\n" + _digits_csv_rows(1)[0] + "\n")
    preflight.check(_config(tmp_path, registry, QP_DATA_ROOT=str(data)))  # one row anywhere is enough


def test_feature_key_not_in_the_header(tmp_path, registry):
    data = _csv(tmp_path / "data", _digits_csv_rows())
    keys = ["pixl_00"] + PIXEL_KEYS[1:]
    config = _config(tmp_path, registry, QP_DATA_ROOT=str(data),
                     QP_CONTRACT__INPUTS=json.dumps({"image": {"features": keys, "shape": [8, 8, 1]}}))
    with pytest.raises(preflight.PreflightError, match=r"feature key\(s\) \['pixl_00'\] is not in .*did you mean "
                                                       r"'pixel_00'\?; fix contract.inputs \(QP_CONTRACT__INPUTS"):
        preflight.check(config)
    # A lost zero of padding points at the padded name, not at a longer one ('pixel_59').
    config = _config(tmp_path, registry, QP_DATA_ROOT=str(data), QP_CONTRACT__INPUTS=json.dumps(
        {"image": {"features": PIXEL_KEYS[:5] + ["pixel_5"] + PIXEL_KEYS[6:], "shape": [8, 8, 1]}}))
    with pytest.raises(preflight.PreflightError, match=r"'pixel_5': did you mean 'pixel_05'\?"):
        preflight.check(config)


def test_label_key_not_in_the_header(tmp_path, registry):
    data = _csv(tmp_path / "data", _digits_csv_rows())
    with pytest.raises(preflight.PreflightError, match=r"label key \['digit'\] is not in .*fix contract.label_key \(QP_CONTRACT__LABEL_KEY, or in the QP_CONFIG file\)"):
        preflight.check(_config(tmp_path, registry, QP_DATA_ROOT=str(data), QP_LABEL_KEY="digit"))


def test_a_label_free_job_needs_no_label_column(tmp_path, registry):
    rows = [",".join(str(r[k]) for k in PIXEL_KEYS) for r in digits_rows()[:60]]
    data = _csv(tmp_path / "data", rows, header=",".join(PIXEL_KEYS))  # no label column
    job = str(REPO_ROOT / "data" / "examples" / "digits_autoencoder.yaml")
    preflight.check(_config(tmp_path, registry, QP_CONFIG=job, QP_DATA_ROOT=str(data)))
    with pytest.raises(preflight.PreflightError, match=r"label key \['label'\] is not in"):  # a task with labels
        preflight.check(_config(tmp_path, registry, QP_DATA_ROOT=str(data)))


def test_module_file_that_does_not_exist(tmp_path, registry):
    config = _config(tmp_path, registry, QP_MODULE_FILE=str(tmp_path / "nope.py"))
    with pytest.raises(preflight.PreflightError, match=r"module_file .*nope.py does not exist: set QP_MODULE_FILE"):
        preflight.check(config)


def test_unwritable_push_destination(tmp_path, registry):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.access(locked, os.W_OK):  # root writes anywhere: a file in the way is unwritable for everyone
        locked.rmdir()
        locked.write_text("a file, not a folder")
    config = _config(tmp_path, tmp_path / "locked" / "serving")
    with pytest.raises(preflight.PreflightError, match="cannot be written .*set QP_PUSH__DESTINATION"):
        preflight.check(config)


def test_the_runner_refuses_bad_data_in_seconds_with_no_traceback(tmp_path, registry):
    data = _csv(tmp_path / "data", _digits_csv_rows())
    env = {k: v for k, v in os.environ.items() if not k.startswith("QP_")}
    env.update(QP_CONFIG=DIGITS_JOB, QP_OUTPUT_ROOT=str(tmp_path / "out"), QP_DATA_ROOT=str(data),
               QP_PUSH__DESTINATION=str(registry), QP_LABEL_KEY="target")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "pipeline" / "local_runner.py")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "error: label key ['target'] is not in" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "pipeline_root").exists()


# ---- every example checked by the trainer before any training ------------------------------
def _train(tmp_path, examples, **settings):
    from tfx_quantization.trainer.executor import Executor

    outputs = {name: [artifact(cls, tmp_path / name)] for name, cls in (
        ("model", standard_artifacts.Model), ("qat_model", standard_artifacts.Model),
        ("model_run", standard_artifacts.ModelRun))}
    Executor().Do({"examples": [examples]}, outputs,
                  {"settings": json.dumps(dict(dict(epochs=1, qat_epochs=1), **settings)),
                   "contract": DIGITS_CONTRACT.to_json()})


def _assert_nothing_trained(tmp_path):
    assert not any(p.name == "saved_model.pb" for p in (tmp_path / "model").rglob("*"))


def _rows(change):
    rows = [dict(r) for r in digits_rows()[:90]]
    change(rows)
    return rows


@pytest.mark.parametrize("change, message", [
    # A late row: row 88 is the train split's 59th example, written as record 29 of the
    # first of its two shards (tests/helpers.py:write_examples, as ExampleGen shards).
    (lambda rows: rows[88].pop("pixel_05"),
     "input feature 'pixel_05' is missing (an empty cell?): 1 of 60 example(s), first at record 29 of "
     "Split-train/data_tfrecord-00000-of-00002.gz (positions are records of the split's files as the pipeline wrote "
     "them from your input, counted from 0: not lines of your input file)"),
    (lambda rows: rows[7].update(pixel_03=b"dark"), "input feature 'pixel_03' holds text, not numbers: 1 of 60"),
    (lambda rows: [r.update(label=10) for r in rows[40:44]], "label 'label' is outside 0..9 (set num_classes, or fix"),
    (lambda rows: [r.update(pixel_09=float(r["pixel_09"])) for r in rows] and rows[4].update(pixel_09=float("nan")),
     "input feature 'pixel_09' holds NaN or infinite values: 1 of 60"),
    (lambda rows: rows[10].update(pixel_01=[1, 2]), "input feature 'pixel_01' holds 2 values, input 'image' [8, 8, 1] needs 1"),
])
def test_bad_values_anywhere_in_the_data_fail_before_training(tmp_path, change, message):
    examples = write_examples(tmp_path / "ex", rows=_rows(change))
    with pytest.raises(ValueError) as e:
        _train(tmp_path, examples)
    assert message in str(e.value), str(e.value)
    _assert_nothing_trained(tmp_path)


def test_corrupt_tfrecord_is_named(tmp_path):
    examples = write_examples(tmp_path / "ex", rows=digits_rows()[:60])
    shard = sorted((tmp_path / "ex" / "Split-train").iterdir())[0]
    shard.write_bytes(shard.read_bytes()[:-40])  # truncated
    with pytest.raises(ValueError, match=f"{shard} is not a valid gzipped TFRecord file: record \\d+ \\(counting from 0\\) "
                                         ".*truncated.*; write the file again or remove it from the input"):
        _train(tmp_path, examples)
    _assert_nothing_trained(tmp_path)


# ---- module files ---------------------------------------------------------------------------
@pytest.mark.parametrize("source, message", [
    ("raise RuntimeError('no GPU here')\n", "raised RuntimeError while loading: no GPU here; fix the module"),
    ("def build_model(*a, **k):\n    return {'not': 'a model'}\n", "returned dict, not a tf_keras.Model"),
    ("def build_model(*a, **k):\n    raise KeyError('alpha')\n", "build_model of .*user.py raised KeyError: 'alpha'"),
])
def test_module_files_that_raise_or_return_the_wrong_thing(tmp_path, digits_examples, source, message):
    module = tmp_path / "user.py"
    module.write_text(source)
    with pytest.raises(ValueError, match=message):
        _train(tmp_path, digits_examples, module_file=str(module))
    _assert_nothing_trained(tmp_path)


LAMBDA_MODULE = textwrap.dedent("""
    import tf_keras as keras

    def build_model(input_shape, num_classes, input_name, output_name, **kwargs):
        inputs = keras.Input(shape=tuple(input_shape), name=input_name)
        scale = 1 / 16.0
        x = keras.layers.Lambda(lambda t: t * scale, name="scale")(inputs)
        x = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(x))
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name=output_name)(x))
""")


def test_a_lambda_layer_stays_float_as_documented(tmp_path, digits_examples):
    from tfx_quantization.quantization import qat

    module = tmp_path / "lambda_model.py"
    module.write_text(LAMBDA_MODULE)
    model = __import__("tfx_quantization.models", fromlist=["get_builder"]).get_builder("", str(module))(
        [8, 8, 1], 10, "image", "probabilities")
    _, left_float = qat.quantization_aware_copy(model)
    assert left_float == ["scale"]


def test_an_unconvertible_op_fails_every_variant_with_its_reason(tmp_path):
    import tensorflow as tf

    from tfx_quantization.model_contract import ModelContract
    from tfx_quantization.post_training_quantizer import build

    class Unconvertible(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="image")])
        def serve(self, x):
            # A string op: no TFLite builtin, and SELECT_TF_OPS is never enabled.
            text = tf.strings.as_string(x)
            return {"probabilities": tf.nn.softmax(tf.strings.to_number(text)[:, :2])}

    module = Unconvertible()
    tf.saved_model.save(module, str(tmp_path / "m"), signatures={"serving_default": module.serve})
    with pytest.raises(build.QuantizationError, match=r"no variant could be built: .*float32.*ConverterError"):
        build.quantize_all(str(tmp_path / "m"), str(tmp_path / "q"), contract=ModelContract())
    assert not (tmp_path / "q").exists()


# ---- the registry CLI and the scheduler ---------------------------------------------------
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tfx_quantization.pusher", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, env=dict(os.environ))


def test_tampered_model_is_reported_by_verify(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 a model")
    Registry(str(tmp_path / "serving"), "digits").push(str(model), {"variant": "integer_only"})
    (tmp_path / "serving" / "digits" / "1" / "model.tflite").write_bytes(b"TFL3 another model")
    result = _cli("--destination", str(tmp_path / "serving"), "--model-name", "digits", "verify", "1")
    assert result.returncode == 1 and "version 1: FAILED: size 18 != manifest size_bytes 12" in result.stdout


def test_rollback_to_a_missing_version(tmp_path, registry):
    result = _cli("--destination", str(registry), "--model-name", "digits", "rollback", "9")
    assert result.returncode == 2 and "version 9 does not exist" in result.stderr and "versions: [1]" in result.stderr


def test_unknown_model_name(tmp_path, registry):
    result = _cli("--destination", str(registry), "--model-name", "digitz", "list")
    assert result.returncode == 2 and "no model 'digitz' in" in result.stderr and "(it holds: digits)" in result.stderr


def test_bad_cron_sends_nothing(tmp_path, capsys):
    from kubeflow import schedule

    assert schedule.main(["--dry-run", "--cron", "0 0 25 * * *", "--package", str(tmp_path / "p.yaml")]) == 2
    captured = capsys.readouterr()
    assert "hour field: 25 is outside 0-23" in captured.err and captured.out == ""
