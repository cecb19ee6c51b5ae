"""Kubeflow v2: the compiled spec, the executors it names, cron validation, the dry-run
scheduler, and two steps run through the spec's own container command, as KFP's launcher
runs them, on local artifact URIs."""
import copy
import json
import os
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components.contracts import read_manifest
from kubeflow import runner, schedule
from tests.conftest import REPO_ROOT

IMAGE = "registry.example/tfx-quantization:test"
EXPECTED_DEPS = {
    "CsvExampleGen": set(),
    "latest_pushed_model_resolver": set(),
    "QATTrainer": {"CsvExampleGen"},
    "RepresentativeDatasetGen": {"CsvExampleGen"},
    "PostTrainingQuantizer": {"CsvExampleGen", "QATTrainer", "RepresentativeDatasetGen"},  # validation data
    "TFLiteEvaluator": {"CsvExampleGen", "QATTrainer", "PostTrainingQuantizer", "latest_pushed_model_resolver"},
    "QuantizedModelPusher": {"PostTrainingQuantizer", "TFLiteEvaluator"},
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    out = tmp_path_factory.mktemp("kf")
    env = {"QP_EPOCHS": "3", "QP_QAT_EPOCHS": "1", "QP_LATENCY_RUNS": "5"}
    path = runner.compile_pipeline(IMAGE, "gs://bucket/root", out, environ=env)
    assert path.name == "pipeline.yaml"
    with open(path) as f:
        return yaml.safe_load(f)


def test_compiled_yaml_parses_into_a_pipeline_spec_with_one_task_per_component(spec):
    proto = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = proto.root.dag.tasks
    assert set(tasks) == set(EXPECTED_DEPS)
    for name, deps in EXPECTED_DEPS.items():
        assert set(tasks[name].dependent_tasks) == deps, name


def test_every_executor_uses_the_image_and_imports(spec):
    executors = spec["deploymentSpec"]["executors"]
    paths = []
    for name, executor in executors.items():
        if "container" not in executor:
            continue  # the resolver runs in the orchestrator
        container = executor["container"]
        assert container["image"] == IMAGE
        args = container["args"]
        paths.append(args[args.index("--executor_class_path") + 1])
    assert "components.tflite_evaluator.executor.Executor" in paths and len(paths) == 6
    code = "import importlib, sys\nfor p in sys.argv[1:]:\n    m, c = p.rsplit('.', 1)\n    getattr(importlib.import_module(m), c)\n"
    subprocess.run([sys.executable, "-c", code] + paths, cwd="/", check=True, capture_output=True)


def test_container_paths_and_settings_come_through(spec):
    def constant(task, name):
        return spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]

    def settings(task):
        return json.loads(constant(task, "settings")["stringValue"])

    assert settings("QATTrainer")["epochs"] == 3
    assert settings("TFLiteEvaluator")["latency_runs"] == 5
    assert constant("CsvExampleGen", "input_base") == {"stringValue": "/pipeline/data/digits"}
    assert settings("QuantizedModelPusher")["destination"] == "/mnt/models"


def test_compile_rejects_a_local_pipeline_root(tmp_path):
    with pytest.raises(ValueError, match="is not an object-store URI"):
        runner.compile_pipeline(IMAGE, "/tmp/root", tmp_path)


@pytest.mark.parametrize("cron", ["0 0 2 * * *", "*/30 * * * * ?", "0 15 10 ? * MON-FRI", "0 0 0 1,15 JAN-JUN *",
                                  "5 4 3 2 1 0"])
def test_cron_accepts_valid_expressions(cron):
    assert schedule.validate_cron(cron) == cron


@pytest.mark.parametrize("cron, message", [
    ("0 2 * * *", "has 5 fields; Kubeflow needs 6"),
    ("60 0 2 * * *", "second field: 60 is outside 0-59"),
    ("0 0 24 * * *", "hour field: 24 is outside 0-23"),
    ("0 0 2 32 * *", "day-of-month field: 32 is outside 1-31"),
    ("0 0 2 * FOO *", "month field: 'FOO' is not a number"),
    ("0 0 2 * * 9", "day-of-week field: 9 is outside 0-6"),
    ("0 0 ? * * *", "'?' is allowed only in day-of-month or day-of-week"),
    ("*/0 * * * * *", "step of 0"),
    ("0 30-10 * * * *", "range 30-10 runs backwards"),
])
def test_cron_rejects_invalid_expressions(cron, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("*", r"\*")):
        schedule.validate_cron(cron)


def test_dry_run_prints_every_call_and_a_bad_cron_sends_nothing(tmp_path, capsys):
    package = tmp_path / "pipeline.yaml"
    package.write_text("pipelineInfo: {name: x}\n")
    assert schedule.main(["--dry-run", "--cron", "0 0 2 * * *", "--package", str(package)]) == 0
    out = capsys.readouterr().out
    for call in ("get_pipeline_id(", "upload_pipeline(", "create_experiment(", "list_recurring_runs(",
                 "create_recurring_run("):
        assert call in out
    assert "max_concurrency=1, no_catchup=True" in out and "cron_expression='0 0 2 * * *'" in out
    assert schedule.main(["--dry-run", "--cron", "0 2 * * *", "--package", str(package)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "has 5 fields" in captured.err


def test_existing_pipeline_gets_a_new_version_and_the_run_is_replaced(tmp_path):
    from types import SimpleNamespace

    package = tmp_path / "pipeline.yaml"
    package.write_text("pipelineInfo: {name: x}\n")
    calls = []

    class Existing(schedule.DryRunClient):
        def get_pipeline_id(self, name):
            super().get_pipeline_id(name)
            return "p-1"

        def list_recurring_runs(self, **kw):
            super().list_recurring_runs(**kw)
            return SimpleNamespace(recurring_runs=[SimpleNamespace(display_name="nightly", recurring_run_id="r-0"),
                                                   SimpleNamespace(display_name="other", recurring_run_id="r-9")])

    ids = schedule.schedule(Existing("h", out=calls.append), package, "digits", "exp", "nightly", "0 0 2 * * *", "v2")
    assert ids["pipeline_id"] == "p-1"
    assert any(c.startswith("upload_pipeline_version(") and "pipeline_version_name='v2'" in c for c in calls)
    assert "delete_recurring_run(recurring_run_id='r-0')" in calls
    assert not any("r-9" in c and c.startswith("delete") for c in calls)


# ---- the launcher ------------------------------------------------------------------------


def _executor_input(spec, task, inputs, outputs, output_file):
    """An ExecutorInput JSON as KFP's launcher builds it from the spec for `task`."""
    component = spec["components"][spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]]
    in_defs = component["inputDefinitions"]["artifacts"]
    out_defs = component["outputDefinitions"]["artifacts"]
    params = spec["root"]["dag"]["tasks"][task]["inputs"].get("parameters", {})

    def artifacts(defs, given):
        return {key: {"artifacts": [{
            "name": f"projects/test/locations/local/metadataStores/default/artifacts/{task}-{key}",
            "uri": a["uri"], "metadata": a.get("metadata", {}),
            "type": copy.deepcopy(defs[key]["artifactType"])}]} for key, a in given.items()}

    return {
        "inputs": {
            "artifacts": artifacts(in_defs, inputs),
            # Schema 2.0 specs hold constants as Values; the launcher passes them as `parameters`.
            "parameters": {k: v["runtimeValue"]["constantValue"] for k, v in params.items()},
        },
        "outputs": {"artifacts": artifacts(out_defs, outputs), "outputFile": str(output_file)},
    }


def _launch(spec, task, inputs, outputs, tmp_path):
    container = spec["deploymentSpec"]["executors"][f"{task}_executor"]["container"]
    output_file = tmp_path / task / "executor_output.json"
    invocation = json.dumps(_executor_input(spec, task, inputs, outputs, output_file))
    args = [invocation if a == "{{$}}" else a for a in container["args"]]
    # `python` in the command is the image's interpreter; here, this environment's.
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("TF_USE_LEGACY_KERAS", None)  # the entry point must not depend on the caller's env
    result = subprocess.run(container["command"] + args, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    with open(output_file) as f:
        return json.load(f)


def test_quantizer_and_evaluator_run_under_the_kubeflow_entrypoint(spec, tmp_path, trained_digits,
                                                                   digits_calibration, digits_examples):
    quantized_uri = tmp_path / "quantized"
    out = _launch(spec, "PostTrainingQuantizer", {
        "model": {"uri": trained_digits["model_uri"]},
        "qat_model": {"uri": trained_digits["qat_model_uri"]},
        "representative_dataset": {"uri": digits_calibration, "metadata": {"split_names": '["calibration"]'}},
    }, {"quantized_models": {"uri": str(quantized_uri)}}, tmp_path)
    manifest = read_manifest(str(quantized_uri))
    assert all(v["status"] == "ok" for v in manifest["variants"].values())
    metadata = out["artifacts"]["quantized_models"]["artifacts"][0]["metadata"]
    assert sorted(json.loads(metadata["variants_built"])) == sorted(manifest["variants"])

    out = _launch(spec, "TFLiteEvaluator", {
        "examples": {"uri": digits_examples.uri, "metadata": {"split_names": digits_examples.split_names}},
        "model": {"uri": trained_digits["model_uri"]},
        "quantized_models": {"uri": str(quantized_uri), "metadata": metadata},
    }, {"evaluation": {"uri": str(tmp_path / "evaluation")}, "blessing": {"uri": str(tmp_path / "blessing")}},
        tmp_path)
    blessing = out["artifacts"]["blessing"]["artifacts"][0]["metadata"]
    assert blessing["blessed"] == 1 and blessing["selected_variant"] in manifest["variants"]
    assert os.path.exists(tmp_path / "blessing" / "BLESSED")
    assert os.path.exists(tmp_path / "evaluation" / "report.html")
