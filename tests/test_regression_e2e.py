"""The regression workload end to end (issue #30): scikit-learn's diabetes set as shipped in
data/diabetes/diabetes.csv, trained with the task's loss, calibrated by quantile bins of the
target, quantized, evaluated and gated on MAE. The gate passes a well calibrated integer
model and refuses the same model calibrated on two examples, whose MAE is measurably
worse; both must beat the training mean."""
import csv
import math
from pathlib import Path

import pytest

from tfx_quantization.model_contract import ModelContract
from tfx_quantization.post_training_quantizer import build
from tfx_quantization.settings import CalibrationSettings, GateSettings, QuantizeSettings, TrainSettings
from tfx_quantization.tflite_evaluator import evaluate
from tests.helpers import trained_workload

REPO = Path(__file__).resolve().parents[1]
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
CONTRACT = ModelContract(task="regression", label_key="target",
                         inputs={"features": {"features": FEATURES, "shape": [10]}})
VARIANTS = ["float32", "dynamic_range", "full_integer", "integer_only"]
# The bundled job's gate (data/examples/diabetes.yaml): MAE may rise by at most 5 % of the
# float model's, judged on the upper end of the paired t interval.
GATE = dict(max_accuracy_drop=None, max_relative_drop=0.05, latency_runs=3, latency_warmup=1)


def _rows():
    with open(REPO / "data" / "diabetes" / "diabetes.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    root = tmp_path_factory.mktemp("diabetes")
    workload = trained_workload(
        root, _rows(), CONTRACT, TrainSettings(model="tabular_mlp", epochs=40, learning_rate=0.01, seed=3),
        CalibrationSettings(num_samples=100, strategy="stratified", label_key="target", quantile_bins=5, seed=0))
    build.quantize_all(workload["model"], str(root / "good"), QuantizeSettings(variants=VARIANTS),
                       calibration_files=workload["calibration_files"])
    # The same model calibrated on two examples: int8 ranges that clip most of the eval data.
    build.quantize_all(workload["model"], str(root / "two_examples"), QuantizeSettings(
        variants=["integer_only"], max_calibration_samples=2), calibration_files=workload["calibration_files"])
    return dict(workload, root=root)


def _evaluate(diabetes, which, out, contract=None, **gate):
    return evaluate.evaluate_models(diabetes["eval"], diabetes["model"], str(diabetes["root"] / which), str(out),
                                    GateSettings(**dict(GATE, **gate)), train_split_dir=diabetes["train"],
                                    contract=contract)


def test_training_uses_the_regression_loss_and_calibration_stratifies_the_target(diabetes):
    assert diabetes["result"].spec.task == "regression"
    assert diabetes["result"].float_accuracy < 60  # the float model's eval MAE (label units; the mean's is ~65)
    assert not diabetes["result"].warnings  # no first-epoch stall alarm: the head started at the label mean
    stats = diabetes["sampling"]
    assert len(stats["quantile_edges"]) == 6 and stats["num_samples_taken"] == 100
    # Five quantile bins of the target: each holds about a fifth of the sample.
    assert sorted(stats["per_class_samples"]) == ["0", "1", "2", "3", "4"]
    assert all(15 <= n <= 25 for n in stats["per_class_samples"].values()), stats["per_class_samples"]


def test_the_gate_passes_a_good_integer_model_and_refuses_one_that_measurably_raises_the_error(diabetes, tmp_path):
    good = _evaluate(diabetes, "good", tmp_path / "good")
    assert good.task == "regression" and good.metric == "mae"
    float_mae, trivial = good.float_model["mae"], good.trivial_predictor["mae"]
    assert float_mae < 0.98 * trivial  # the sanity bound: it beats predicting the training mean
    assert good.blessed and good.selected_variant == "integer_only", good.verdicts
    chosen = good.variants["integer_only"]
    assert chosen["vs_float"]["method"] == "paired t" and chosen["vs_float"]["high"] <= 0.05 * float_mae
    assert math.isclose(chosen["accuracy_drop"], chosen["mae"] - float_mae)  # the degradation: MAE's increase
    assert "<th>increase vs float (label units)</th>" in (tmp_path / "good" / "report.html").read_text()
    # The report's scatter and error histogram come from a bounded sample of the eval split.
    sample = chosen["sample"]
    assert len(sample["label"]) == len(sample["float"]) == len(sample["variant"]) == good.num_eval_examples
    assert abs(sum(abs(v - y) for v, y in zip(sample["variant"], sample["label"])) / len(sample["label"])
               - chosen["mae"]) < 1e-3 * chosen["mae"]  # the sample is the figures' own examples (all of them here)
    assert (tmp_path / "good" / "regression.png").exists()

    bad = _evaluate(diabetes, "two_examples", tmp_path / "bad")
    fig, verdict = bad.variants["integer_only"], bad.verdicts["integer_only"]
    print({n: {k: f.get(k) for k in ("mae", "rmse", "sqnr_db", "vs_float", "size_bytes")} for n, f in
           list(good.variants.items()) + [("two_examples", fig)]}, good.float_model, good.trivial_predictor)
    assert fig["vs_float"]["low"] > 0.05 * float_mae, fig["vs_float"]  # measurably worse, not only unsure
    assert not bad.blessed and any("relative mae increase vs float model" in r for r in verdict.reasons)
    assert fig["sqnr_db"] < chosen["sqnr_db"] - 3

    # Without labels (task none), the fidelity floor alone refuses it and passes the good one.
    label_free = dict(contract=CONTRACT.model_copy(update={"task": "none"}), min_sqnr_db=chosen["sqnr_db"] - 3)
    assert _evaluate(diabetes, "good", tmp_path / "none_good", **label_free).selected_variant == "integer_only"
    refused = _evaluate(diabetes, "two_examples", tmp_path / "none_bad", **label_free)
    assert refused.task == "none" and not refused.blessed and "mae" not in refused.variants["integer_only"]
    assert any("< min_sqnr_db" in r for r in refused.verdicts["integer_only"].reasons)
