"""The whole DAG end to end: first through the TFX CLI (`tfx pipeline create` + `tfx run
create --engine local`), then in-process with LocalDagRunner to prove caching, then with an
impossible gate to prove nothing is pushed. Real components, real sqlite ML Metadata."""
import collections
import json
import os
import subprocess
import sys

import pytest
from tfx import v1 as tfx

from tfx_quantization.registry import Registry
from tfx_quantization.pipeline import outcome, summary
from tfx_quantization.pipeline.config import PipelineConfig
from tfx_quantization.pipeline.dag import create_pipeline
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

COMPONENTS = ["CsvExampleGen", "QATTrainer", "RepresentativeDatasetGen", "PostTrainingQuantizer",
              "TFLiteEvaluator", "QuantizedModelPusher"]
# The bundled digits job, smaller; paths absolute, as the CLI runs in a temporary folder.
SMALL = {"QP_CONFIG": str(REPO_ROOT / "data" / "examples" / "digits.yaml"),
         "QP_DATA_ROOT": str(REPO_ROOT / "data" / "digits"), "QP_PIPELINE_NAME": "e2e-digits",
         "QP_EPOCHS": "4", "QP_QAT_EPOCHS": "1", "QP_LATENCY_RUNS": "10",
         "QP_CALIBRATION__NUM_SAMPLES": "100",
         # Four of the nine variants, one per way a variant is made (one converter call, with
         # calibration, from the QAT model, the selective search): the run is done three times
         # here. `make run` builds all nine; tests/test_post_training_quantizer.py checks each.
         "QP_VARIANTS": '["dynamic_range", "integer_only", "qat_int8", "selective_integer"]'}


def _states(metadata_path):
    store = summary.open_store(metadata_path)
    return collections.Counter((e["component"], e["state"]) for e in summary.executions(store))


def _latest_props(metadata_path, type_name):
    store = summary.open_store(metadata_path)
    return summary.props(summary.latest_artifact(store, type_name))


def _latest_blessed_model(store):
    from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
    from tfx.types import artifact_utils

    def artifacts(type_name):
        [mlmd_type] = [t for t in store.get_artifact_types() if t.name == type_name]
        return [artifact_utils.deserialize_artifact(mlmd_type, a) for a in store.get_artifacts_by_type(type_name)]

    models = artifacts("Model")
    assert len(models) == 3  # the float and QAT SavedModels, and the quantized models
    result = LatestBlessedModelStrategy().resolve_artifacts(
        store, {"model": models, "model_blessing": artifacts("ModelBlessing")})
    [model] = result["model"]
    return model


def test_pipeline_end_to_end_cli_cache_and_gate(tmp_path):
    env = dict(os.environ, QP_OUTPUT_ROOT=str(tmp_path / "out"), LOCAL_HOME=str(tmp_path / "cli_home"), **SMALL)
    env.pop("QP_PYTHON", None)
    tfx_cli = os.path.join(os.path.dirname(sys.executable), "tfx")
    runner = str(REPO_ROOT / "pipeline" / "local_runner.py")
    subprocess.run([tfx_cli, "pipeline", "create", "--engine", "local", "--pipeline_path", runner],
                   env=env, cwd=tmp_path, check=True, capture_output=True)
    run = subprocess.run([tfx_cli, "run", "create", "--engine", "local", "--pipeline_name", "e2e-digits"],
                         env=env, cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Selected variant :" in run.stdout and "Pushed           : version 1" in run.stdout

    config = PipelineConfig.from_env({k: v for k, v in env.items() if k.startswith("QP_")})
    states = _states(config.metadata_path)
    for component in COMPONENTS:
        assert states[(component, "COMPLETE")] == 1, states
    registry = Registry(config.push.destination, config.push.model_name)
    assert registry.versions() == [1] and registry.verify(1) == []
    evaluation = _latest_props(config.metadata_path, "ModelEvaluation")
    assert registry.manifest(1)["variant"] == evaluation["selected_variant"]
    store = summary.open_store(config.metadata_path)
    report = os.path.join(summary.latest_artifact(store, "ModelEvaluation").uri, "report.html")
    assert evaluation["selected_variant"] in open(report).read()
    # The run's outcome for automation, and the opt-in exit status (0: a model was deployed).
    result = json.load(open(tmp_path / "out" / "outcome.json"))
    assert result["blessed"] and result["deployed"] and result["pushed_version"] == 1
    assert result["selected_variant"] == evaluation["selected_variant"] and result["report"] == report
    check = [sys.executable, "-m", "tfx_quantization.pipeline.outcome"]
    strict_env = dict(env, QP_FAIL_IF_NOTHING_PUSHED="1")
    assert subprocess.run(check, env=strict_env, cwd=REPO_ROOT, capture_output=True).returncode == 0
    # A pipeline of one's own has no QP_ configuration: its ML Metadata file is enough.
    own = subprocess.run([*check, "--metadata", config.metadata_path, "--fail-if-nothing-pushed"], cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if not k.startswith("QP_")}, capture_output=True,
                         text=True)
    assert own.returncode == 0, own.stderr
    assert json.loads(own.stdout)["pushed_version"] == 1 and json.loads(own.stdout)["report"] == report

    # TFX's own LatestBlessedModelStrategy, run on this store, resolves the quantized models
    # (the artifact holding the blessed .tflite), not the float SavedModel.
    resolved = _latest_blessed_model(store)
    assert "PostTrainingQuantizer" in resolved.uri
    assert os.path.exists(os.path.join(resolved.uri, evaluation["selected_variant"], "model.tflite"))

    # Second run, unchanged: the data, training, calibration and quantization are cached.
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    states = _states(config.metadata_path)
    for component in ("CsvExampleGen", "QATTrainer", "RepresentativeDatasetGen", "PostTrainingQuantizer"):
        assert states[(component, "CACHED")] == 1, states
    pushed = _latest_props(config.metadata_path, "PushedModel")
    assert pushed["pushed"] == 0 and "already holds the same model" in pushed["reason"]
    assert registry.versions() == [1]
    assert len(store.get_contexts_by_type("pipeline_run")) == 2

    # Third run with an impossible gate: nothing is pushed, and the reasons say why.
    strict = PipelineConfig.from_env({k: v for k, v in env.items() if k.startswith("QP_")}, gate={"max_model_bytes": 1})
    tfx.orchestration.LocalDagRunner().run(create_pipeline(strict))
    blessing = _latest_props(config.metadata_path, "ModelBlessing")
    assert blessing["blessed"] == 0
    verdicts = json.loads(blessing["verdicts"])
    assert all(not v["passed"] for v in verdicts.values())
    assert all(any("> max_model_bytes 1" in r for r in v["reasons"]) for v in verdicts.values())
    pushed = _latest_props(config.metadata_path, "PushedModel")
    assert pushed["pushed"] == 0 and "did not bless" in pushed["reason"]
    assert registry.versions() == [1] and registry.latest() == 1
    assert "none passed the gate" in summary.summarize(config.metadata_path)
    result = outcome.write(strict)
    assert not result.blessed and not result.deployed and result.pushed_version is None
    assert any("> max_model_bytes 1" in why for why in result.why)
    status = subprocess.run(check, env=strict_env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert status.returncode == outcome.NOTHING_PUSHED_EXIT and "nothing deployed by this run" in status.stderr
    assert subprocess.run(check, env=dict(strict_env, QP_FAIL_IF_NOTHING_PUSHED="0"), cwd=REPO_ROOT).returncode == 0
