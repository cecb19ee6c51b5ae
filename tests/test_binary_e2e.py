"""The imbalanced binary workload end to end (issue #30): scikit-learn's breast cancer set
as shipped in data/breast_cancer/breast_cancer.csv (23 % positives), judged by ROC AUC with
DeLong's paired interval. Always answering the majority class scores 0.77 accuracy and AUC
0.5; the gate's sanity bound is AUC 0.5. It passes the variant that ranks as the float model
does and refuses the one whose ranking is measurably worse."""
import csv
from pathlib import Path

import pytest

from tfx_quantization.model_contract import ModelContract
from tfx_quantization.post_training_quantizer import build
from tfx_quantization.settings import CalibrationSettings, GateSettings, QuantizeSettings, TrainSettings
from tfx_quantization.tflite_evaluator import evaluate
from tests.helpers import trained_workload

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "data" / "breast_cancer" / "breast_cancer.csv"


def _rows():
    with open(CSV) as f:
        return [{k: (int(v) if k == "malignant" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


FEATURES = [k for k in _rows()[0] if k != "malignant"]
CONTRACT = ModelContract(task="binary", num_classes=2, label_key="malignant",
                         inputs={"features": {"features": FEATURES, "shape": [len(FEATURES)]}})
# The bundled job's gate (data/examples/breast_cancer.yaml): AUC may drop by at most 0.02,
# judged on the upper end of DeLong's paired interval.
GATE = dict(max_accuracy_drop=0.02, latency_runs=3, latency_warmup=1)


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    root = tmp_path_factory.mktemp("cancer")
    workload = trained_workload(
        root, _rows(), CONTRACT, TrainSettings(model="tabular_mlp", epochs=30, learning_rate=0.003, seed=3),
        CalibrationSettings(num_samples=100, strategy="stratified", label_key="malignant", seed=0))
    build.quantize_all(workload["model"], str(root / "quantized"), QuantizeSettings(
        variants=["float32", "dynamic_range", "integer_only"]), calibration_files=workload["calibration_files"])
    return dict(workload, root=root)


def test_the_gate_judges_auc_with_delong_and_refuses_a_measurably_worse_ranking(cancer, tmp_path):
    result = evaluate.evaluate_models(cancer["eval"], cancer["model"], str(cancer["root"] / "quantized"),
                                      str(tmp_path / "ev"), GateSettings(**GATE), train_split_dir=cancer["train"])
    print({n: {k: f.get(k) for k in ("auc", "accuracy", "sqnr_db", "vs_float")} for n, f in result.variants.items()},
          result.float_model.get("auc"), result.float_model.get("accuracy"))
    assert result.task == "binary" and result.metric == "auc" and result.majority_class_rate == 0.5
    assert result.float_model["auc"] > 0.95 and "accuracy" in result.float_model  # and accuracy at the threshold
    # dynamic_range ranks as the float model does; integer_only's one int8 input scale for 30
    # features from 0.001 to 4000 leaves it no better than chance: measurably worse.
    assert result.blessed and result.selected_variant == "dynamic_range", result.verdicts
    assert result.variants["dynamic_range"]["vs_float"]["method"] == "DeLong paired"
    assert result.variants["dynamic_range"]["vs_float"]["high"] <= 0.02
    fig, verdict = result.variants["integer_only"], result.verdicts["integer_only"]
    assert fig["vs_float"]["low"] > 0.02, fig["vs_float"]  # measurably worse, not only unsure
    assert not verdict.passed and any("auc drop vs float model" in r for r in verdict.reasons)
    assert any("does not beat a random ranking's AUC 0.5000" in r for r in verdict.reasons)
    # The report draws the ROC of the float model and the selected variant from the AUC histograms.
    roc = result.float_model["roc"]
    assert roc["fpr"][0] == roc["tpr"][0] == 0 and roc["fpr"][-1] == roc["tpr"][-1] == 1
    assert 'alt="roc.png"' in (tmp_path / "ev" / "report.html").read_text() and (tmp_path / "ev" / "roc.png").exists()
