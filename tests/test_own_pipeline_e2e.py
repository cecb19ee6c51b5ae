"""The library as a platform team uses it: their own pipeline file, in their own folder, with
their own `pipeline` and `components` packages first on sys.path, no PYTHONPATH, TFX
imported before us, TFX's stock CsvExampleGen (train/eval only) and Trainer, then our five
stages from the public API, run with LocalDagRunner: a version is pushed."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

EXAMPLE = REPO_ROOT / "data" / "examples" / "own_pipeline"

CHECK = """
import runpy, sys
import pipeline, components          # the user's own packages, first on sys.path
assert pipeline.OWNER == components.OWNER == "user"
sys.argv = ["my_pipeline.py", "--data-root", "data", "--output-root", "out", "--train-steps", "200"]
runpy.run_path("my_pipeline.py", run_name="__main__")
import tfx_quantization
assert sys.modules["pipeline"].OWNER == "user" and sys.modules["components"].OWNER == "user"
print("LOADED", json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "components", "kubeflow"))))
print("PACKAGE", tfx_quantization.__file__)
"""


def test_own_pipeline_outside_the_repository_pushes_a_version(tmp_path):
    for name in ("my_pipeline.py", "trainer_module.py"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    for package in ("pipeline", "components"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text('OWNER = "user"\n')
    (tmp_path / "data").mkdir()
    shutil.copy(REPO_ROOT / "data" / "digits" / "digits.csv", tmp_path / "data" / "digits.csv")
    (tmp_path / "check.py").write_text("import json\n" + CHECK)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TF_USE_LEGACY_KERAS")
           and not k.startswith("QP_")}
    run = subprocess.run([sys.executable, "check.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=1500)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]

    loaded = json.loads(next(line for line in run.stdout.splitlines() if line.startswith("LOADED "))[7:])
    assert loaded == ["components", "pipeline"], loaded  # only the user's: ours live under tfx_quantization
    package = next(line for line in run.stdout.splitlines() if line.startswith("PACKAGE "))[8:]
    assert not package.startswith(str(tmp_path))

    from tfx_quantization.registry import Registry

    registry = Registry(str(tmp_path / "out" / "serving"), "own-digits")
    assert registry.versions() == [1] and registry.verify(1) == []
    # TFX's default split has no validation split: the selective search is off, with the reason.
    from tfx_quantization import contracts

    quantized = sorted((tmp_path / "out" / "pipeline_root" / "PostTrainingQuantizer" / "quantized_models").iterdir())
    manifest = contracts.read_manifest(str(quantized[-1]))
    selective = manifest.variants["selective_integer"]
    assert selective.status == "skipped" and "no 'validation' split" in selective.reason, selective
    assert "integer_only" in manifest.built()
    # Our stages' progress lines show in the user's run, at TFX's INFO verbosity.
    assert "tfx_quantization.tflite_evaluator" in output and "Selected variant" in output, output[-3000:]
    assert "tfx_quantization.pusher" in output
    # And the run in a few lines at the end, read from the user's ML Metadata store.
    assert "Pushed           : version 1 at " in run.stdout and "Selected variant : " in run.stdout, run.stdout[-3000:]
