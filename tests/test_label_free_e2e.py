"""The label-free workload end to end (issue #30): the shipped job data/examples/digits_autoencoder.yaml,
an autoencoder of scikit-learn's 8x8 digits (data/digits/digits.csv's 64 pixel columns; the
label column is not even written to the examples here, so nothing can read it). The
built-in trainer trains it to reconstruct its input (task none), calibration samples
uniformly, and the gate judges the variants by the job's fidelity floors alone (SQNR and
cosine similarity of the outputs against the float model's). It passes dynamic_range and
refuses integer_only, whose output SQNR is measurably lower: the model normalizes its input
in the graph, dividing by max(std, 1e-7); three pixels are constant in the train split, so
the per-pixel multiplier holds 1e7 beside values under 40, and as one int8 constant every
other multiplier rounds to 0 (the integer model sees a blank image)."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from tfx_quantization.model_contract import ModelContract
from tfx_quantization.post_training_quantizer import build
from tfx_quantization.quantization import data
from tfx_quantization.settings import CalibrationSettings, GateSettings, QuantizeSettings, TrainSettings
from tfx_quantization.tflite_evaluator import evaluate
from tests.helpers import PIXEL_KEYS, digits_rows, trained_workload

REPO = Path(__file__).resolve().parents[1]
JOB = yaml.safe_load((REPO / "data" / "examples" / "digits_autoencoder.yaml").read_text())
CONTRACT = ModelContract(**JOB["contract"])


def _pixels_only():
    return [{k: row[k] for k in PIXEL_KEYS} for row in digits_rows()]


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("autoencoder")
    workload = trained_workload(root, _pixels_only(), CONTRACT, TrainSettings(**JOB["train"], seed=3),
                                CalibrationSettings(num_samples=100, seed=0).resolved(""))
    build.quantize_all(workload["model"], str(root / "quantized"),
                       QuantizeSettings(variants=["dynamic_range", "integer_only"]),
                       calibration_files=workload["calibration_files"])
    return dict(workload, root=root)


def test_the_autoencoder_learns_to_reconstruct_its_input_without_labels(autoencoder):
    result = autoencoder["result"]
    assert result.spec.task == "none" and result.spec.output_units == 64 and result.spec.output_name == "reconstruction"
    # The saved model's eval reconstruction error (MAE, pixel units: its outputs against its
    # own inputs) is what training reported, and beats predicting each pixel's training mean.
    x, _ = data.parse_numpy(list(data.iter_serialized(data.split_files(autoencoder["eval"]))), result.spec)
    mae = float(np.mean(np.abs(data.Serving(autoencoder["model"], result.spec)(x) - x["pixels"])))
    rows = np.array([[r[k] for k in PIXEL_KEYS] for r in _pixels_only()], np.float64)
    train, held_out = rows[np.arange(len(rows)) % 3 != 0], rows[np.arange(len(rows)) % 3 == 0]
    trivial = float(np.mean(np.abs(held_out - train.mean(axis=0))))
    print("eval MAE", mae, "as trained", result.float_accuracy, "per-pixel mean's", trivial)
    assert mae == pytest.approx(result.float_accuracy, rel=1e-3) and mae < 0.8 * trivial
    stats = autoencoder["sampling"]
    assert stats["num_samples_taken"] == 100 and stats["strategy"] == "uniform" and not stats["label_key"]


def test_the_fidelity_floors_alone_pass_a_faithful_variant_and_refuse_a_measurably_worse_one(autoencoder, tmp_path):
    gate = GateSettings(**dict(JOB["gate"], latency_runs=3, latency_warmup=1))
    result = evaluate.evaluate_models(autoencoder["eval"], autoencoder["model"], str(autoencoder["root"] / "quantized"),
                                      str(tmp_path), gate, train_split_dir=autoencoder["train"])
    good, bad = result.variants["dynamic_range"], result.variants["integer_only"]
    print({n: {k: f.get(k) for k in ("sqnr_db", "cosine_similarity", "mean_abs_error", "size_bytes")}
           for n, f in result.variants.items()})
    assert result.task == "none" and result.metric == "sqnr_db" and "mae" not in good
    assert result.blessed and result.selected_variant == "dynamic_range", result.verdicts
    assert good["sqnr_db"] >= gate.min_sqnr_db and good["cosine_similarity"] >= gate.min_cosine_similarity
    verdict = result.verdicts["integer_only"]
    assert not verdict.passed and any("< min_sqnr_db" in r for r in verdict.reasons), verdict.reasons
    # Measurably: at least twice the error power of the faithful variant, far under the floor.
    assert bad["sqnr_db"] < good["sqnr_db"] - 3 and bad["sqnr_db"] < gate.min_sqnr_db - 3
    # Without a task metric, the report still draws each variant's SQNR against the floor.
    assert 'alt="fidelity.png"' in (tmp_path / "report.html").read_text()
