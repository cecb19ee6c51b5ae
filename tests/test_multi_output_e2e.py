"""The multi-output workload end to end (issue #30): the shipped job
data/examples/digits_two_heads.yaml, one model with two heads on scikit-learn's 8x8 digits
(data/digits_two_heads/digits_two_heads.csv): a class head `digit` (the primary output the
gate judges, accuracy) and a count head `dark_pixels` (a regression: how many pixels are at
intensity 8 or more). The built-in small_cnn grows both heads from the contract and the
trainer trains both; every variant converts with both outputs, the interpreter reads each
by its signature name, and the evaluator measures each output of each variant (its task's
metric and its fidelity to the float model's same output). The gate passes a faithful
variant and refuses one calibrated on examples preprocessed differently from training's
(pixels divided by 8: the int8 input range clips most strokes), which measurably loses
digit accuracy."""
import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from tfx_quantization import contracts
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.post_training_quantizer import build
from tfx_quantization.quantization import data
from tfx_quantization.quantization.interpreter import TFLiteRunner
from tfx_quantization.settings import CalibrationSettings, GateSettings, QuantizeSettings, TrainSettings
from tfx_quantization.tflite_evaluator import evaluate
from tests.helpers import trained_workload

REPO = Path(__file__).resolve().parents[1]
JOB = yaml.safe_load((REPO / "data" / "examples" / "digits_two_heads.yaml").read_text())
CONTRACT = ModelContract(**JOB["contract"])
GATE = GateSettings(latency_runs=3, latency_warmup=1)  # the job's gate: the defaults
DIM = 8  # the bad variant's calibration examples hold pixel // DIM


def _rows():
    with open(REPO / "data" / "digits_two_heads" / "digits_two_heads.csv") as f:
        return [{k: float(v) if k == "dark_pixels" else int(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_heads")
    rows = _rows()
    workload = trained_workload(root, rows, CONTRACT, TrainSettings(**dict(JOB["train"], epochs=6, seed=3)),
                                CalibrationSettings(num_samples=100, seed=0).resolved(CONTRACT.label_key))
    build.quantize_all(workload["model"], str(root / "good"),
                       QuantizeSettings(variants=["dynamic_range", "integer_only"]),
                       calibration_files=workload["calibration_files"])
    dimmed = [{k: v // DIM if k.startswith("pixel_") else v for k, v in row.items()}
              for i, row in enumerate(rows[:300]) if i % 3]  # train rows (every third row is eval)
    files = data.write_split(root / "dimmed" / "Split-calibration", [data.to_example(r) for r in dimmed])
    build.quantize_all(workload["model"], str(root / "bad"), QuantizeSettings(variants=["integer_only"]),
                       calibration_files=files)
    return dict(workload, root=root)


def test_both_heads_train_and_every_variant_returns_both_outputs_by_name(two_heads):
    spec = two_heads["result"].spec
    assert spec.output_names == ["digit", "dark_pixels"] and [o.task for o in spec.output_specs()] == [
        "multiclass", "regression"]
    # The contract recorded with the model names both outputs, so every later stage reads them.
    assert ModelContract.of_spec(spec).extra_outputs[0].output == "dark_pixels"
    x, labels = data.parse_numpy(list(data.iter_serialized(data.split_files(two_heads["eval"]))), spec)
    reference = data.Serving(two_heads["model"], spec).outputs(x)
    count = data.parse_batch(list(data.iter_serialized(data.split_files(two_heads["eval"]))), spec,
                             all_labels=True)[1]["dark_pixels"].numpy()
    float_mae = float(np.mean(np.abs(reference["dark_pixels"] - count)))
    print("float accuracy", np.mean(np.argmax(reference["digit"], -1) == labels), "count MAE", float_mae,
          "(the mean count's", float(np.mean(np.abs(count - count.mean()))), ")")
    assert np.mean(np.argmax(reference["digit"], -1) == labels) > 0.9
    assert float_mae < 0.7 * np.mean(np.abs(count - count.mean()))  # the count head learned (measured: 0.57)
    manifest = contracts.read_manifest(str(two_heads["root"] / "good"))
    for name in ("dynamic_range", "integer_only"):
        runner = TFLiteRunner(contracts.variant_path(str(two_heads["root"] / "good"), manifest, name))
        assert sorted(runner.outputs) == ["dark_pixels", "digit"]
        got = runner.predict_outputs(x, spec.output_names)
        # Each output is the float model's same output (read by name, not by tensor order).
        assert np.mean(np.argmax(got["digit"], -1) == np.argmax(reference["digit"], -1)) > 0.97, name
        assert np.max(np.abs(got["dark_pixels"] - reference["dark_pixels"])) < 1.0, name


def test_the_gate_judges_the_primary_output_and_every_output_is_measured(two_heads, tmp_path):
    good = evaluate.evaluate_models(two_heads["eval"], two_heads["model"], str(two_heads["root"] / "good"),
                                    str(tmp_path / "good"), GATE)
    bad = evaluate.evaluate_models(two_heads["eval"], two_heads["model"], str(two_heads["root"] / "bad"),
                                   str(tmp_path / "bad"), GATE)
    shown = {w: {n: {o: {k: f.get(k) for k in ("accuracy", "mae", "sqnr_db", "agreement_with_float")}
                     for o, f in r.by_output(v).items()} for n, v in r.variants.items()}
             for w, r in (("good", good), ("bad", bad))}
    print(shown, {n: v.reasons for n, v in bad.verdicts.items()})
    assert good.output == "digit" and good.metric == "accuracy" and good.task == "multiclass"
    assert good.outputs == {"digit": "multiclass", "dark_pixels": "regression"}
    assert good.blessed and good.verdicts["dynamic_range"].passed, good.verdicts
    decision = contracts.read_decision(str(tmp_path / "good"))
    assert decision.output == "digit" and decision.metric == "accuracy"
    # Per-output figures for every variant and the float model: the task's metric and fidelity.
    for figures in list(good.variants.values()) + list(bad.variants.values()):
        by_output = good.by_output(figures)
        assert set(by_output) == {"digit", "dark_pixels"}
        for f in by_output.values():
            assert all(np.isfinite(f[k]) for k in ("sqnr_db", "cosine_similarity", "mean_abs_error", "max_abs_error"))
        assert 0 < by_output["digit"]["agreement_with_float"] <= 1 and "accuracy" in by_output["digit"]
        count = by_output["dark_pixels"]
        assert count["metric"] == "mae" and count["vs_float"]["method"] == "paired t" and "accuracy" not in count
    assert "mae" in good.float_model["outputs"]["dark_pixels"]
    # The refused variant: its digit accuracy measurably lower (the interval's lower end past 0).
    refused = bad.variants["integer_only"]
    assert not bad.blessed and not bad.verdicts["integer_only"].passed
    assert refused["vs_float"]["low"] > 0 and refused["accuracy"] < good.variants["dynamic_range"]["accuracy"] - 0.02
    assert any(r.startswith("accuracy drop vs float model") for r in bad.verdicts["integer_only"].reasons)
    # Its other output is measurably less faithful too, and the report shows SQNR per output.
    assert refused["outputs"]["dark_pixels"]["sqnr_db"] < good.variants["dynamic_range"]["outputs"]["dark_pixels"][
        "sqnr_db"] - 10
    page = (tmp_path / "good" / "report.html").read_text()
    assert 'alt="fidelity_dark_pixels.png"' in page and "dark_pixels" in page and "<h3>Every output</h3>" in page
    assert (tmp_path / "good" / "fidelity_dark_pixels.png").exists()


def test_qat_fine_tuning_keeps_both_heads_by_name(two_heads, tmp_path):
    """QATFineTuner's library call (after a stock Trainer) on the two-headed model: the Keras
    outputs are matched to the contract's by name and both survive the QAT copy."""
    from tfx_quantization import training
    from tfx_quantization.settings import FineTuneSettings

    result = training.fine_tune(two_heads["model"], two_heads["train"], two_heads["eval"], str(tmp_path / "qat"),
                                str(tmp_path / "logs"), FineTuneSettings(qat_epochs=1, qat_steps_per_epoch=5, seed=0))
    assert not result.qat_failure and result.qat_accuracy > 0.85, result
    spec = result.spec
    x, labels = data.parse_numpy(list(data.iter_serialized(data.split_files(two_heads["eval"]))), spec)
    outputs = data.Serving(str(tmp_path / "qat"), spec).outputs(x)
    assert sorted(outputs) == ["dark_pixels", "digit"] and outputs["dark_pixels"].shape[-1] == 1
    assert np.mean(np.argmax(outputs["digit"], -1) == labels) > 0.85
