"""Module boundaries: stages depend on the contracts, the settings and the pure library,
never on each other; the pure library imports no TFX; the contracts and settings import
neither TensorFlow nor TFX (so `python -m pipeline.config` stays fast)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

COMPONENTS = REPO_ROOT / "components"
STAGES = ["trainer", "representative_dataset_gen", "post_training_quantizer", "tflite_evaluator", "pusher"]


def imported_modules(path: Path):
    """Every module a file imports, absolute (`from . import x` resolved against its package)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage(stage):
    others = [s for s in STAGES if s != stage]
    for path in sorted((COMPONENTS / stage).rglob("*.py")):
        for module in imported_modules(path):
            for other in others:
                assert not (module == f"components.{other}" or module.startswith(f"components.{other}.")), (
                    f"{path.relative_to(REPO_ROOT)} imports {module}: stages share code through "
                    "components/contracts.py, components/settings.py and components/quantization only")


def test_the_pure_library_imports_no_tfx_and_no_stage():
    for path in sorted((COMPONENTS / "quantization").rglob("*.py")):
        for module in imported_modules(path):
            assert not module.startswith("tfx"), f"{path} imports {module}"
            assert not any(module.startswith(f"components.{s}") for s in STAGES), f"{path} imports {module}"


def test_contracts_and_settings_load_without_tensorflow():
    code = ("import sys, components.contracts, components.settings, pipeline.config\n"
            "heavy = [m for m in ('tensorflow', 'tfx', 'apache_beam') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_the_checker_sees_a_cross_stage_import(tmp_path):
    fake = REPO_ROOT / "components" / "pusher" / "_boundary_probe.py"
    fake.write_text("from components.tflite_evaluator.evaluate import evaluate_models\n")
    try:
        with pytest.raises(AssertionError, match="imports components.tflite_evaluator.evaluate"):
            test_no_stage_imports_another_stage("pusher")
    finally:
        fake.unlink()
