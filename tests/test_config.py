"""Configuration: one settings model per stage, composed by PipelineConfig; QP_* names
(nested and shorthand), a YAML/JSON file, validation before any stage runs, and every
setting reaching the component that uses it."""
import json
import os
import subprocess
import sys

import pytest

from tfx_quantization.model_contract import ModelContract
from tfx_quantization.settings import (
    CalibrationSettings, FineTuneSettings, GateSettings, PushSettings, QuantizeSettings, SettingsError, TrainSettings,
)
from tfx_quantization.pipeline.config import PipelineConfig, env_name
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.fast

EXAMPLES = REPO_ROOT / "data" / "examples"
DIGITS = {"QP_CONFIG": str(EXAMPLES / "digits.yaml")}  # the bundled job

# A valid, non-default value for every setting of every stage. A new setting must be added
# here (test_every_setting_has_a_non_default_value_here), and then the test below proves it
# travels from the environment to its component.
NON_DEFAULT = {
    "train": dict(
        model="mobilenet_v2", module_file="/somewhere/model.py", model_kwargs={"alpha": 0.5}, epochs=3,
        steps_per_epoch=7, qat_epochs=4, qat_steps_per_epoch=5, batch_size=16, learning_rate=0.002,
        qat_learning_rate=0.0003, qat_range_batches=3, seed=5),
    "calibration": dict(source_split="validation", num_samples=50, strategy="uniform", label_key="lbl", seed=9,
                        quantile_bins=4),
    "quantize": dict(
        variants=["float32", "integer_only", "qat_int8"], integer_io_type="uint8", max_calibration_samples=40,
        validation_split="holdout", validation_samples=300, search_max_drop=0.03, max_float_layers=3,
        max_search_steps=4, selective_integer_io=True, calibration_methods=["kl"], calibration_percentile=99.9,
        calibration_confidence=0.9, cross_layer_equalization=True, bias_correction=True),
    "gate": dict(
        max_accuracy_drop=0.02, max_relative_drop=0.05, max_model_bytes=90000, max_latency_ms=2.5, min_accuracy=0.5,
        allow_float32=True, selection=["qat_int8", "integer_only"], metric="rmse", top_k=3,
        min_sqnr_db=20.0, min_cosine_similarity=0.9,
        latency_runs=7, latency_warmup=2, num_threads=2, eval_batch_size=64, eval_split="test",
        drop_decision="lower_bound", confidence=0.9, min_margin_over_majority=0.1, min_integer_compute_fraction=0.5,
        latency_tie_tolerance=0.1, size_tie_tolerance=0.1, max_deployed_shift=0.2, device_check_examples=50,
        targets=[{"name": "mcu", "runtime": "tflm", "integer_only": False, "integer_io": True, "max_model_bytes": None,
                  "max_arena_bytes": 9000, "max_latency_ms": None, "selection": None}]),
    "push": dict(destination="/tmp/somewhere/registry", model_name="m1", signing_key="/keys/sign.pem",
                 public_key="/keys/sign.pub.pem"),
    "contract": dict(signature="dense", inputs={"x": {"features": ["a", "b"], "shape": [2], "image": None}},
                     label_key="digit", num_classes=3, output="logits", output_kind="logits", task="regression",
                     threshold=0.3, extra_outputs=[{"output": "count", "task": "regression", "label_key": "count",
                                                    "num_classes": 1, "output_kind": "logits", "threshold": 0.4}]),
}
SECTION_OF_COMPONENT = {
    "QATTrainer": ("train", TrainSettings), "RepresentativeDatasetGen": ("calibration", CalibrationSettings),
    "PostTrainingQuantizer": ("quantize", QuantizeSettings), "TFLiteEvaluator": ("gate", GateSettings),
    "QuantizedModelPusher": ("push", PushSettings),
}


def _env_value(value):
    return value if isinstance(value, str) else json.dumps(value)


def test_every_setting_has_a_non_default_value_here():
    for section, model in {**{s: m for s, m in SECTION_OF_COMPONENT.values()}, "contract": ModelContract}.items():
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
    # The contract, given once: to the trainer, which builds its model from it and records it.
    assert ModelContract.from_json(components["QATTrainer"].exec_properties["contract"]) == ModelContract(
        **NON_DEFAULT["contract"])
    for component_id in ("PostTrainingQuantizer", "TFLiteEvaluator"):
        assert components[component_id].exec_properties.get("contract") is None, component_id
    gen = components["ImportExampleGen"]
    assert gen.exec_properties["input_base"] == "/data/x"
    assert "span-{SPAN}/*" in gen.exec_properties["input_config"]


def test_nested_names_shorthand_file_and_overrides(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("pipeline_name: from-file\ndata_root: /data/x\ngate:\n  max_accuracy_drop: 0.05\n"
                    "  selection: fastest\ntrain: {epochs: 4, seed: 11}\n"
                    "contract: {inputs: {x: {features: [a, b], shape: [2]}}, num_classes: 2}\n")
    config = PipelineConfig.from_env({"QP_CONFIG": str(path), "QP_GATE__SELECTION": '["integer_only"]',
                                      "QP_EPOCHS": "6", "QP_VERBOSE": "1"})
    assert config.pipeline_name == "from-file"  # file
    assert config.gate.max_accuracy_drop == 0.05  # file
    assert config.gate.selection == ["integer_only"]  # the variable wins over the file
    assert config.train.epochs == 6  # shorthand wins over the file
    assert config.calibration.seed == 11  # derived from the trainer's seed
    assert config.quantize.search_max_drop == 0.05  # derived from the gate's bound
    assert config.calibration.label_key == config.contract.label_key == "label"
    assert config.push.model_name == "from-file"  # the registry's model name: the pipeline's
    both = PipelineConfig.from_env({**DIGITS, "QP_SEED": "3"})  # shorthand: every stage with a `seed`
    assert both.train.seed == 3 and both.calibration.seed == 3
    labels = PipelineConfig.from_env({**DIGITS, "QP_LABEL_KEY": "y"})  # the contract's and the calibration's
    assert labels.contract.label_key == "y" and labels.calibration.label_key == "y"
    json_file = tmp_path / "c.json"
    json_file.write_text(json.dumps({"pipeline_name": "j", "data_root": "/d", "push": {"model_name": "other"},
                                     "tfx_module_file": "/m.py"}))
    assert PipelineConfig.from_env({"QP_CONFIG": str(json_file)}).push.model_name == "other"
    explicit = PipelineConfig.from_env(DIGITS, gate={"max_accuracy_drop": 0.2}, output_root="/tmp/o")
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
    ({"QP_CONTRACT__INPUTS": '{"image": {"features": ["a", "b"], "shape": [8, 8, 1]}}'},
     "2 feature keys cannot fill shape [8, 8, 1]"),
    ({"QP_CONTRACT__INPUTS": '{"image": {"features": ["a"]}}'}, "contract.inputs.image.shape is not set"),
    ({"QP_CONTRACT__INPUTS": '{"image": {"shape": [0]}}'}, "contract.inputs.image.shape (QP_CONTRACT__INPUTS) = 0: Input should be greater than 0"),
    ({"QP_CONTRACT__NUM_CLASSES": "null"}, "contract.num_classes is not set: the built-in trainer needs"),
    ({"QP_CONTRACT__INPUTS": "{}"}, "contract.inputs is empty: the built-in trainer builds a one-input model"),
    ({"QP_MODEL": "resnet"}, "model 'resnet' is not a built-in model"),
    ({"QP_MODEL_NAME": "../x"}, "must be a plain folder name"),
    ({"QP_CONFIG": "/nonexistent/c.yaml"}, "QP_CONFIG=/nonexistent/c.yaml: the file does not exist"),
    ({"QP_CONFIG": "nonexistent/c.yaml"}, f"does not exist (looked for {os.getcwd()}/nonexistent/c.yaml: a relative path"),
])
def test_bad_settings_are_refused_with_their_name_and_fix(env, message):
    with pytest.raises(SettingsError) as e:
        PipelineConfig.from_env({**DIGITS, **env})
    assert message in str(e.value)


def test_a_bad_config_file_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(SettingsError, match="must hold a mapping of settings"):
        PipelineConfig.from_env({"QP_CONFIG": str(path)})
    path.write_text("pipeline_name: p\ndata_root: /d\ngate: {bogus: 1}\n")
    with pytest.raises(SettingsError, match=r"c.yaml: gate.bogus is not a setting. Fix the file; every setting: "):
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
    shown = _cli(env={"QP_CONFIG": "data/examples/digits.yaml"})  # relative: from the current directory
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["gate"]["max_accuracy_drop"] == 0.01
    assert json.loads(shown.stdout)["data_root"] == str(REPO_ROOT / "data" / "digits")
    # Lists on one line each, not 64 pixel lines (about 110 lines with the kubeflow section).
    assert len(shown.stdout.splitlines()) < 130
    assert _cli("pipeline_name", env=DIGITS).stdout.strip() == "digits-quantization"
    assert _cli("gate.max_accuracy_drop", env={**DIGITS, "QP_MAX_ACCURACY_DROP": "0.03"}).stdout.strip() == "0.03"
    bad = _cli(env={**DIGITS, "QP_MAX_ACCURACY_DROP": "-1"})
    assert bad.returncode == 2 and "gate.max_accuracy_drop" in bad.stderr and "Traceback" not in bad.stderr
    unnamed = _cli()
    assert unnamed.returncode == 2 and "Traceback" not in unnamed.stderr
    assert "pipeline_name (QP_PIPELINE_NAME) and data_root (QP_DATA_ROOT) are not set" in unnamed.stderr
    assert "QP_CONFIG=data/examples/digits.yaml" in unnamed.stderr


def test_the_contract_and_the_tfx_module_reach_the_stock_dag_from_the_environment(tmp_path):
    from tfx_quantization.pipeline.dag import create_components

    module = tmp_path / "module.py"
    module.write_text("")
    env = {env_name(("contract", name)): _env_value(v) for name, v in NON_DEFAULT["contract"].items()}
    env.update({env_name(("train", name)): _env_value(v) for name, v in NON_DEFAULT["train"].items()})
    env.update(QP_PIPELINE_NAME="stock", QP_DATA_ROOT="/data", QP_TFX_MODULE_FILE=str(module),
               QP_TFX_TRAIN_STEPS="7", QP_TFX_EVAL_STEPS="3")
    components = {c.id: c for c in create_components(PipelineConfig.from_env(env))}
    assert {"StatisticsGen", "SchemaGen", "Transform", "Trainer", "QATFineTuner"} <= set(components)
    assert "QATTrainer" not in components
    # Given once, to the fine-tuner (the first of our stages with a model); the later stages
    # read it from the fine-tuner's artifact.
    fine_tuner = components["QATFineTuner"]
    assert ModelContract.from_json(fine_tuner.exec_properties["contract"]) == ModelContract(**NON_DEFAULT["contract"])
    for component_id in ("PostTrainingQuantizer", "TFLiteEvaluator"):
        assert components[component_id].exec_properties.get("contract") is None, component_id
    # The fine-tuner gets its own settings: the train section's fine-tuning fields, nothing else.
    received = FineTuneSettings.from_json(fine_tuner.exec_properties["settings"])
    assert received.model_dump() == {k: v for k, v in NON_DEFAULT["train"].items() if k in FineTuneSettings.model_fields}
    assert components["RepresentativeDatasetGen"].inputs["model"].producer_component_id == "QATFineTuner"
    assert json.loads(components["Trainer"].exec_properties["train_args"])["num_steps"] == 7
    assert json.loads(components["Trainer"].exec_properties["eval_args"])["num_steps"] == 3
    assert components["Transform"].exec_properties["module_file"] == str(module)
    # The built-in DAG: the QATTrainer builds from the contract and records it; calibration
    # gets its QAT model.
    builtin = {c.id: c for c in create_components(PipelineConfig.from_env(DIGITS))}
    assert builtin["PostTrainingQuantizer"].exec_properties.get("contract") is None
    assert ModelContract.from_json(builtin["QATTrainer"].exec_properties["contract"]).inputs["image"].shape == [8, 8, 1]
    assert builtin["RepresentativeDatasetGen"].inputs["model"].producer_component_id == "QATTrainer"


@pytest.mark.parametrize("config_file", ["digits.yaml", "stock_tfx.yaml"])
def test_a_changed_label_key_reaches_calibration(config_file):
    """QP_CONTRACT__LABEL_KEY is the one label: the built-in trainer's or the fine-tuner's
    contract, and the calibration's stratification."""
    from tfx_quantization.pipeline.dag import create_components

    config = PipelineConfig.from_env({"QP_CONFIG": str(EXAMPLES / config_file), "QP_CONTRACT__LABEL_KEY": "species_xf"})
    assert config.calibration.label_key == "species_xf"
    components = {c.id: c for c in create_components(config)}
    calibration = CalibrationSettings.from_json(components["RepresentativeDatasetGen"].exec_properties["settings"])
    assert calibration.label_key == "species_xf"
    first = components["QATTrainer" if config_file == "digits.yaml" else "QATFineTuner"]
    assert ModelContract.from_json(first.exec_properties["contract"]).label_key == "species_xf"
    # A label key set for calibration itself stays its own.
    own = PipelineConfig.from_env({"QP_CONFIG": str(EXAMPLES / config_file), "QP_CALIBRATION__LABEL_KEY": "other"})
    assert own.calibration.label_key == "other" and own.contract.label_key == "label"


def test_no_setting_default_is_the_digits_demo():
    """The stage settings and the pipeline know nothing of the bundled job: without a
    configuration file the pipeline names what is missing; the digits job is a file."""
    for model in (TrainSettings, FineTuneSettings, CalibrationSettings, QuantizeSettings, GateSettings,
                  PushSettings, ModelContract):
        assert "digit" not in model().to_json().lower(), model.__name__
    defaults = {n: f.get_default(call_default_factory=True) for n, f in PipelineConfig.model_fields.items()
                if not f.is_required()}
    assert "digit" not in json.dumps(defaults, default=lambda m: m.model_dump()).lower()
    assert not any("digit" in str(v) for v in PipelineConfig.model_fields["output_root"].get_default(
        call_default_factory=True).split("/"))
    with pytest.raises(SettingsError) as e:
        PipelineConfig.from_env({})
    assert "pipeline_name (QP_PIPELINE_NAME) and data_root (QP_DATA_ROOT) are not set" in str(e.value)
    assert "QP_CONFIG" in str(e.value)
    with pytest.raises(SettingsError, match=r"data_root \(QP_DATA_ROOT\) is not set"):
        PipelineConfig.from_env({"QP_PIPELINE_NAME": "p"})
    digits = PipelineConfig.from_env(DIGITS)
    assert digits.pipeline_name == "digits-quantization" and digits.push.model_name == "digits"
    assert digits.contract.inputs["image"].features == [f"pixel_{i:02d}" for i in range(64)]
    assert digits.contract.num_classes == 10 and digits.calibration.label_key == "label"


def test_every_example_configuration_is_complete_on_its_own():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        config = PipelineConfig.from_env({"QP_CONFIG": str(path)})
        assert config.pipeline_name and config.data_root, path.name


def test_relative_paths_are_taken_from_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = PipelineConfig.from_env({"QP_PIPELINE_NAME": "p", "QP_DATA_ROOT": "in", "QP_MODULE_FILE": "m.py",
                                      "QP_CONTRACT__INPUTS": '{"x": {"shape": [1]}}', "QP_NUM_CLASSES": "2"})
    assert config.data_root == str(tmp_path / "in") and config.output_root == str(tmp_path / "local_outputs")
    assert config.train.module_file == str(tmp_path / "m.py")
    assert config.pipeline_root == str(tmp_path / "local_outputs" / "pipeline_root")


def test_settings_built_directly_name_the_bad_setting_in_one_line_with_the_close_match():
    with pytest.raises(SettingsError, match=r"^GateSettings: max_acuracy_drop = 0.1: is not a setting: did you mean "
                                            r"max_accuracy_drop"):
        GateSettings(max_acuracy_drop=0.1)
    with pytest.raises(SettingsError, match=r"^TrainSettings: epochs = 0: Input should be greater than or equal to 1$"):
        TrainSettings(epochs=0)
    settings = TrainSettings()
    with pytest.raises(SettingsError, match=r"^TrainSettings: epochs = -1: "):
        settings.epochs = -1
    assert settings.epochs == TrainSettings().epochs
    # A key inside a nested dict (an input's name is a dict key, not a setting) gets its close match.
    with pytest.raises(SettingsError, match=r"inputs\.image\.featurs = \['a'\]: is not a setting: did you mean features\?"):
        ModelContract(inputs={"image": {"featurs": ["a"]}}, num_classes=10)
    # Nested in the pipeline's configuration, the full path and its variable are still named.
    with pytest.raises(SettingsError, match=r"gate\.max_accuracy_drop \(QP_GATE__MAX_ACCURACY_DROP\) = -1: "):
        PipelineConfig.build({"pipeline_name": "x", "data_root": "d", "gate": {"max_accuracy_drop": -1}})


def test_the_outcome_command_without_an_evaluated_run_says_so_and_exits_4(tmp_path):
    from tfx_quantization.pipeline import outcome

    env = {"PATH": "/usr/bin:/bin", "TF_USE_LEGACY_KERAS": "1"}
    store = tmp_path / "metadata.sqlite"
    command = [sys.executable, "-m", "tfx_quantization.pipeline.outcome", "--metadata", str(store)]
    # A mistyped path is named as such, not taken for a store with no run.
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and f"--metadata {store}: no such file" in result.stderr, result.stderr
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration.metadata import sqlite_metadata_connection_config

    metadata_store.MetadataStore(sqlite_metadata_connection_config(str(store)))  # a store with no run in it
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == outcome.NO_RUN_EXIT == 4, result.stderr
    assert f"no evaluated run found in {store}" in result.stderr and "--metadata" in result.stderr
