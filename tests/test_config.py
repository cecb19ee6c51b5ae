"""Configuration: one settings model per stage, composed by PipelineConfig; QP_* names
(nested and shorthand), a YAML/JSON file, validation before any stage runs, and every
setting reaching the component that uses it."""
import json
import subprocess
import sys

import pytest

from tfx_quantization.settings import (
    CalibrationSettings, GateSettings, PushSettings, QuantizeSettings, SettingsError, TrainSettings,
)
from tfx_quantization.pipeline.config import PipelineConfig, env_name
from tests.conftest import REPO_ROOT

# A valid, non-default value for every setting of every stage. A new setting must be added
# here (test_every_setting_has_a_non_default_value_here), and then the test below proves it
# travels from the environment to its component.
NON_DEFAULT = {
    "train": dict(
        feature_keys=["image"], input_shape=[4, 4, 3], label_key="digit", num_classes=3, model="mobilenet_v2",
        module_file="/somewhere/model.py", model_kwargs={"alpha": 0.5}, epochs=3, steps_per_epoch=7,
        qat_epochs=4, qat_steps_per_epoch=5, batch_size=16, learning_rate=0.002, qat_learning_rate=0.0003,
        qat_range_batches=3,
        seed=5, input_name="x", output_name="y", image={"channels": 3, "scale": 0.5, "offset": -1.0}),
    "calibration": dict(source_split="validation", num_samples=50, strategy="uniform", label_key="lbl", seed=9),
    "quantize": dict(
        variants=["float32", "integer_only", "qat_int8"], integer_io_type="uint8", max_calibration_samples=40,
        validation_split="holdout", validation_samples=300, search_max_drop=0.03, max_float_layers=3,
        max_search_steps=4, selective_integer_io=True),
    "gate": dict(
        max_accuracy_drop=0.02, max_relative_drop=0.05, max_model_bytes=90000, max_latency_ms=2.5, min_accuracy=0.5,
        allow_float32=True, selection=["qat_int8", "integer_only"], metric="top_k_accuracy", top_k=3,
        latency_runs=7, latency_warmup=2, num_threads=2, eval_batch_size=64, eval_split="test",
        drop_decision="lower_bound", confidence=0.9, min_margin_over_majority=0.1, min_integer_compute_fraction=0.5,
        latency_tie_tolerance=0.1, max_deployed_shift=0.2, device_check_examples=50,
        targets=[{"name": "mcu", "runtime": "tflm", "integer_only": False, "integer_io": True, "max_model_bytes": None,
                  "max_arena_bytes": 9000, "max_latency_ms": None, "selection": None}]),
    "push": dict(destination="/tmp/somewhere/registry", model_name="m1", signing_key="/keys/sign.pem",
                 public_key="/keys/sign.pub.pem"),
    "contract": dict(signature="dense", inputs={"x": {"features": ["a", "b"], "image": None}}, label_key="digit",
                     num_classes=3, output="logits", output_kind="logits"),
}
SECTION_OF_COMPONENT = {
    "QATTrainer": ("train", TrainSettings), "RepresentativeDatasetGen": ("calibration", CalibrationSettings),
    "PostTrainingQuantizer": ("quantize", QuantizeSettings), "TFLiteEvaluator": ("gate", GateSettings),
    "QuantizedModelPusher": ("push", PushSettings),
}


def _env_value(value):
    return value if isinstance(value, str) else json.dumps(value)


def test_every_setting_has_a_non_default_value_here():
    for section, model in {s: m for s, m in SECTION_OF_COMPONENT.values()}.items():
        assert set(NON_DEFAULT[section]) == set(model.model_fields), section
        defaults = model()
        for name, value in NON_DEFAULT[section].items():
            assert getattr(defaults, name) != value, f"{section}.{name}: pick a value that is not the default"


def test_every_setting_reaches_its_component_from_the_environment():
    from tfx_quantization.pipeline.dag import create_components

    env = {env_name((section, name)): _env_value(v) for section, fields in NON_DEFAULT.items() for name, v in
           fields.items()}
    env.update(QP_PIPELINE_NAME="p2", QP_DATA_ROOT="/data/x", QP_INPUT_PATTERN="span-{SPAN}/*",
               QP_DATA_FORMAT="tfrecord")
    config = PipelineConfig.from_env(env)
    components = {c.id: c for c in create_components(config)}
    for component_id, (section, model) in SECTION_OF_COMPONENT.items():
        received = model.from_json(components[component_id].exec_properties["settings"])
        for name, value in NON_DEFAULT[section].items():
            assert received.model_dump()[name] == value, f"{component_id} did not receive {section}.{name}"
    gen = components["ImportExampleGen"]
    assert gen.exec_properties["input_base"] == "/data/x"
    assert "span-{SPAN}/*" in gen.exec_properties["input_config"]


def test_nested_names_shorthand_file_and_overrides(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("pipeline_name: from-file\ngate:\n  max_accuracy_drop: 0.05\n  selection: fastest\n"
                    "train: {epochs: 4, seed: 11}\n")
    config = PipelineConfig.from_env({"QP_CONFIG": str(path), "QP_GATE__SELECTION": '["integer_only"]',
                                      "QP_EPOCHS": "6", "QP_VERBOSE": "1"})
    assert config.pipeline_name == "from-file"  # file
    assert config.gate.max_accuracy_drop == 0.05  # file
    assert config.gate.selection == ["integer_only"]  # the variable wins over the file
    assert config.train.epochs == 6  # shorthand wins over the file
    assert config.calibration.seed == 11  # derived from the trainer's seed
    assert config.quantize.search_max_drop == 0.05  # derived from the gate's bound
    assert config.calibration.label_key == config.train.label_key == "label"
    both = PipelineConfig.from_env({"QP_SEED": "3"})  # shorthand: every stage with a `seed`
    assert both.train.seed == 3 and both.calibration.seed == 3
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps({"push": {"model_name": "other"}}))
    assert PipelineConfig.from_env({"QP_CONFIG": str(json_file)}).push.model_name == "other"
    explicit = PipelineConfig.from_env({}, gate={"max_accuracy_drop": 0.2}, output_root="/tmp/o")
    assert explicit.gate.max_accuracy_drop == 0.2 and explicit.metadata_path == "/tmp/o/metadata.sqlite"
    assert explicit.push.destination == "/tmp/o/serving"


@pytest.mark.parametrize("env, message", [
    ({"QP_PIPELNE_NAME": "x"}, "QP_PIPELNE_NAME is not a pipeline setting. Did you mean QP_PIPELINE_NAME"),
    ({"QP_GATE__MAX_ACURACY_DROP": "0.1"}, "Did you mean QP_GATE__MAX_ACCURACY_DROP"),
    ({"QP_ENABLE_CACHE": "maybe"}, "enable_cache (QP_ENABLE_CACHE) = 'maybe': Input should be a valid boolean"),
    ({"QP_BEAM_PIPELINE_ARGS": "--x"}, "beam_pipeline_args (QP_BEAM_PIPELINE_ARGS) = '--x': Input should be a valid list"),
    ({"QP_DATA_FORMAT": "parquet"}, "data_format (QP_DATA_FORMAT) = 'parquet': Input should be 'csv' or 'tfrecord'"),
    ({"QP_MAX_ACCURACY_DROP": "-1"}, "gate.max_accuracy_drop (QP_GATE__MAX_ACCURACY_DROP) = -1: Input should be greater"),
    ({"QP_MAX_ACCURACY_DROP": "null"}, "set max_accuracy_drop and/or max_relative_drop"),
    ({"QP_SELECTION": '["biggest"]'}, "unknown variant(s) ['biggest']"),
    ({"QP_VARIANTS": '["int4"]'}, "unknown variant(s) ['int4']"),
    ({"QP_VALIDATION_SPLIT": "eval"}, "is the split the evaluator's gate uses"),
    ({"QP_VARIANTS": '["float32"]', "QP_SELECTION": '["integer_only"]'}, "which quantize.variants ['float32'] never builds"),
    ({"QP_FEATURE_KEYS": '["a", "b"]'}, "2 feature keys cannot fill shape [8, 8, 1]"),
    ({"QP_MODEL": "resnet"}, "model 'resnet' is not a built-in model"),
    ({"QP_MODEL_NAME": "../x"}, "must be a plain folder name"),
    ({"QP_CONFIG": "/nonexistent/c.yaml"}, "QP_CONFIG=/nonexistent/c.yaml: the file does not exist"),
])
def test_bad_settings_are_refused_with_their_name_and_fix(env, message):
    with pytest.raises(SettingsError) as e:
        PipelineConfig.from_env(env)
    assert message in str(e.value)


def test_a_bad_config_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(SettingsError, match="must hold a mapping of settings"):
        PipelineConfig.from_env({"QP_CONFIG": str(path)})
    path.write_text("gate: {bogus: 1}\n")
    with pytest.raises(SettingsError, match=r"gate.bogus \(QP_GATE__BOGUS\) = 1: Extra inputs are not permitted"):
        PipelineConfig.from_env({"QP_CONFIG": str(path)})


def test_settings_round_trip_and_executors_refuse_bad_json():
    gate = GateSettings(max_model_bytes=123, selection=["integer_only"])
    assert GateSettings.from_json(gate.to_json()) == gate
    with pytest.raises(SettingsError, match="GateSettings: max_model_bytes = 0: Input should be greater"):
        GateSettings.from_json('{"max_model_bytes": 0}')


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tfx_quantization.pipeline.config", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_config_command_line():
    helped = _cli("--help")
    assert helped.returncode == 0, helped.stderr
    for name in ("QP_GATE__MAX_ACCURACY_DROP or QP_MAX_ACCURACY_DROP", "QP_CONFIG", "QP_PUSH__DESTINATION"):
        assert name in helped.stdout
    shown = _cli()
    assert shown.returncode == 0 and json.loads(shown.stdout)["gate"]["max_accuracy_drop"] == 0.01
    assert len(shown.stdout.splitlines()) < 100  # lists on one line each, not 64 pixel lines
    assert _cli("pipeline_name").stdout.strip() == "digits-quantization"
    assert _cli("gate.max_accuracy_drop", env={"QP_MAX_ACCURACY_DROP": "0.03"}).stdout.strip() == "0.03"
    bad = _cli(env={"QP_MAX_ACCURACY_DROP": "-1"})
    assert bad.returncode == 2 and "gate.max_accuracy_drop" in bad.stderr and "Traceback" not in bad.stderr


def test_the_contract_and_the_tfx_module_reach_the_stock_dag_from_the_environment(tmp_path):
    from tfx_quantization.settings import ModelContract
    from tfx_quantization.pipeline.dag import create_components

    assert set(NON_DEFAULT["contract"]) == set(ModelContract.model_fields)
    defaults = ModelContract()
    for name, value in NON_DEFAULT["contract"].items():
        assert getattr(defaults, name) != value, f"contract.{name}: pick a value that is not the default"
    module = tmp_path / "module.py"
    module.write_text("")
    env = {env_name(("contract", name)): _env_value(v) for name, v in NON_DEFAULT["contract"].items()}
    env.update(QP_TFX_MODULE_FILE=str(module), QP_TFX_TRAIN_STEPS="7", QP_TFX_EVAL_STEPS="3")
    components = {c.id: c for c in create_components(PipelineConfig.from_env(env))}
    assert {"StatisticsGen", "SchemaGen", "Transform", "Trainer", "QATFineTuner"} <= set(components)
    assert "QATTrainer" not in components
    expected = ModelContract(**NON_DEFAULT["contract"])
    for component_id in ("QATFineTuner", "PostTrainingQuantizer", "TFLiteEvaluator"):
        assert ModelContract.from_json(components[component_id].exec_properties["contract"]) == expected, component_id
    assert json.loads(components["Trainer"].exec_properties["train_args"])["num_steps"] == 7
    assert json.loads(components["Trainer"].exec_properties["eval_args"])["num_steps"] == 3
    assert components["Transform"].exec_properties["module_file"] == str(module)
    # The built-in DAG: the QATTrainer records its own contract, the stages read that one.
    builtin = {c.id: c for c in create_components(PipelineConfig.from_env({}))}
    assert builtin["PostTrainingQuantizer"].exec_properties.get("contract") is None
