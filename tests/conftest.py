import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import components  # noqa: E402,F401  (TF_USE_LEGACY_KERAS before any TensorFlow import)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_examples(tmp_path_factory):
    """The real digits data as an Examples artifact (train: 1198, eval: 599)."""
    from tests.helpers import write_examples

    return write_examples(tmp_path_factory.mktemp("digits_examples"))


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory, digits_examples):
    """Float and QAT digits CNNs, trained once per session through the trainer library."""
    from components.settings import TrainSettings
    from components.trainer import training
    from tests.helpers import PIXEL_KEYS

    out = tmp_path_factory.mktemp("trained_digits")
    cfg = TrainSettings(
        feature_keys=PIXEL_KEYS, input_shape=[8, 8, 1], label_key="label", num_classes=10,
        epochs=6, qat_epochs=1, seed=7,
    )
    float_dir, qat_dir = out / "model" / "Format-Serving", out / "qat_model" / "Format-Serving"
    result = training.train(
        f"{digits_examples.uri}/Split-train", f"{digits_examples.uri}/Split-eval",
        str(float_dir), str(qat_dir), str(out / "logs"), cfg,
    )
    return {
        "float": str(float_dir), "qat": str(qat_dir), "result": result, "root": out,
        "model_uri": str(out / "model"), "qat_model_uri": str(out / "qat_model"),
    }


@pytest.fixture(scope="session")
def digits_calibration(tmp_path_factory, digits_examples):
    """A 100-example stratified calibration sample of the digits train split."""
    from components.representative_dataset_gen import sampling
    from components.settings import CalibrationSettings

    out = tmp_path_factory.mktemp("calibration")
    sampling.run_sampling(f"{digits_examples.uri}/Split-train", str(out),
                          CalibrationSettings(num_samples=100, strategy="stratified", label_key="label", seed=0))
    return str(out)


@pytest.fixture(scope="session")
def digits_quantized(tmp_path_factory, trained_digits, digits_calibration):
    """All six TFLite variants of the session's digits models."""
    from components.post_training_quantizer import build
    from components.quantization import data

    out = tmp_path_factory.mktemp("quantized") / "out"
    build.quantize_all(
        trained_digits["float"], str(out), qat_model_dir=trained_digits["qat"],
        calibration_files=data.split_files(f"{digits_calibration}/Split-calibration"),
    )
    return str(out)
