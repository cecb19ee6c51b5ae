"""Our stages inside an existing TFX pipeline: CsvExampleGen → StatisticsGen → SchemaGen →
Transform (a preprocessing_fn scaling the features) → TFX's stock Trainer (a run_fn module,
logits, a tf.Example-parsing serving_default plus a dense signature) → QATFineTuner →
RepresentativeDatasetGen → PostTrainingQuantizer → TFLiteEvaluator → Pusher, with the
local orchestrator on a real sqlite ML Metadata store; then TFX's LatestBlessedModelStrategy
on that store resolves the quantized model."""
import json
import os

import pytest
from tfx import v1 as tfx

from tfx_quantization.registry import Registry
from tfx_quantization.pipeline import summary
from tfx_quantization.pipeline.config import PipelineConfig
from tfx_quantization.pipeline.dag import create_pipeline
from tests.conftest import REPO_ROOT
from tests.test_pipeline_e2e import _latest_blessed_model, _latest_props, _states

pytestmark = pytest.mark.e2e

COMPONENTS = ["CsvExampleGen", "StatisticsGen", "SchemaGen", "Transform", "Trainer", "QATFineTuner",
              "RepresentativeDatasetGen", "PostTrainingQuantizer", "TFLiteEvaluator", "QuantizedModelPusher"]


def test_stock_transform_and_trainer_feed_the_quantization_stages(tmp_path):
    env = {"QP_CONFIG": str(REPO_ROOT / "data" / "examples" / "stock_tfx.yaml"), "QP_OUTPUT_ROOT": str(tmp_path),
           "QP_DATA_ROOT": str(REPO_ROOT / "data" / "digits"),
           "QP_TFX_TRAIN_STEPS": "200", "QP_QAT_EPOCHS": "1", "QP_LATENCY_RUNS": "10",
           "QP_CALIBRATION__NUM_SAMPLES": "100", "QP_VARIANTS": '["float32", "integer_only", "qat_int8"]'}
    config = PipelineConfig.from_env(env)
    assert config.contract.signature == "dense" and config.tfx_module_file.endswith("stock_tfx_module.py")
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))

    states = _states(config.metadata_path)
    for component in COMPONENTS:
        assert states[(component, "COMPLETE")] == 1, states
    store = summary.open_store(config.metadata_path)
    # The quantizer read the model contract from the stock model's dense signature.
    quantized_uri = _latest_props(config.metadata_path, "ModelBlessing")["quantized_models_uri"]
    manifest = json.load(open(os.path.join(quantized_uri, "manifest.json")))
    spec = manifest["model_spec"]
    assert spec["signature"] == "dense" and spec["output_name"] == "logits" and spec["output_kind"] == "logits"
    assert [(i["name"], i["features"], i["shape"]) for i in spec["inputs"]] == [("pixels", ["pixels"], [64])]
    assert set(manifest["variants"]) == {"float32", "integer_only", "qat_int8"}
    assert all(v["status"] == "ok" for v in manifest["variants"].values()), manifest["variants"]
    assert manifest["sources"]["qat_model"] and "QATFineTuner" in manifest["sources"]["qat_model"]

    evaluation = _latest_props(config.metadata_path, "ModelEvaluation")
    assert evaluation["float_accuracy"] > 0.85  # the stock model learned, and our stages read it right
    assert evaluation["blessed"] == 1, evaluation
    registry = Registry(config.push.destination, config.push.model_name)
    assert registry.versions() == [1] and registry.verify(1) == []
    assert registry.manifest(1)["variant"] == evaluation["selected_variant"]

    resolved = _latest_blessed_model(store)  # the stock Trainer's, the fine-tuner's, the quantizer's
    assert "PostTrainingQuantizer" in resolved.uri
    assert os.path.exists(os.path.join(resolved.uri, evaluation["selected_variant"], "model.tflite"))
