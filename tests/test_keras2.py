"""Keras 2 is required, never imposed: under Keras 3, building any component and running any
executor stops with one line naming TF_USE_LEGACY_KERAS=1 and that it must come before
TensorFlow or TFX is imported."""
import os
import subprocess
import sys

import pytest

from tfx_quantization import keras2

pytestmark = pytest.mark.fast

CHECK = """
import os, sys
{before}
from tfx import v1 as tfx
{after}
from tfx.types import Channel, standard_artifacts
from tfx_quantization import KerasVersionError, TFLiteEvaluator
from tfx_quantization.trainer.executor import Executor
try:
    TFLiteEvaluator(examples=Channel(type=standard_artifacts.Examples), model=Channel(type=standard_artifacts.Model),
                    quantized_models=Channel(type=standard_artifacts.Model))
    print("component: built")
except KerasVersionError as e:
    print("component:", e)
try:
    Executor().Do({{}}, {{}}, {{}})
except KerasVersionError as e:
    print("executor:", e)
except Exception as e:  # noqa: BLE001 - past the check, the empty inputs fail
    print("executor: past the check:", type(e).__name__)
"""


def _run(before="", after=""):
    env = {k: v for k, v in os.environ.items() if k != keras2.ENV_VAR}
    out = subprocess.run([sys.executable, "-c", CHECK.format(before=before, after=after)], env=env, cwd="/",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())


def test_keras_3_stops_every_component_and_executor_with_one_line():
    lines = _run()
    for who, line in (("component", "TFLiteEvaluator needs Keras 2"), ("executor", "the QATTrainer executor needs Keras 2")):
        assert lines[who].startswith(line), lines
        assert "TF_USE_LEGACY_KERAS=1" in lines[who] and "before TensorFlow or TFX is imported" in lines[who]
        assert "\n" not in lines[who]


def test_setting_the_switch_after_tfx_is_imported_is_named():
    lines = _run(after="os.environ['TF_USE_LEGACY_KERAS'] = '1'")
    assert "TF_USE_LEGACY_KERAS was not 1 when TensorFlow resolved tf.keras, which is Keras 3" in lines["component"], lines
    assert "was not 1 when TensorFlow resolved tf.keras" in lines["executor"]


def test_with_the_switch_first_everything_builds():
    lines = _run(before="os.environ['TF_USE_LEGACY_KERAS'] = '1'")
    assert lines["component"] == "built" and lines["executor"].startswith("past the check"), lines


def test_the_check_reads_the_environment(monkeypatch):
    monkeypatch.delenv(keras2.ENV_VAR, raising=False)
    with pytest.raises(keras2.KerasVersionError, match="TF_USE_LEGACY_KERAS is not set"):
        keras2.require_keras2("X")
    monkeypatch.setenv(keras2.ENV_VAR, "yes")
    with pytest.raises(keras2.KerasVersionError, match="TF_USE_LEGACY_KERAS is 'yes', not '1'"):
        keras2.require_keras2("X")
    monkeypatch.setenv(keras2.ENV_VAR, "1")
    keras2.require_keras2("X")  # this process imported TensorFlow with the switch on (conftest)
