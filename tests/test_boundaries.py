"""Module boundaries of the `tfx_quantization` package: stages depend on the contracts, the
settings and the libraries, never on each other; the pure library imports no TFX; the
contracts and settings import neither TensorFlow nor TFX (so the configuration printer stays
fast); no module imports itself back through others (no import cycle); importing the
package changes nothing process-wide."""
import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.fast

NS = "tfx_quantization"
# The package's folders, as pyproject.toml maps them ([tool.setuptools] package-dir).
FOLDERS = {NS: REPO_ROOT / "components", f"{NS}.pipeline": REPO_ROOT / "pipeline",
           f"{NS}.kubeflow": REPO_ROOT / "kubeflow"}
COMPONENTS = FOLDERS[NS]


def stages():
    """Every folder of the package that declares a TFX component (has a component.py)."""
    return sorted(p.parent.name for p in COMPONENTS.glob("*/component.py"))


def module_files() -> Dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    modules = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if package == NS and parts and f"{NS}.{parts[0]}" in FOLDERS:
                continue
            modules[".".join((package,) + parts)] = path
    return modules


def imported_modules(path: Path, name: str = "") -> Iterator[str]:
    """Every module a file imports (function-level imports too), absolute."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


def import_graph() -> Dict[str, set]:
    files = module_files()
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in imported_modules(path, name) if m in files and m != name}
    return graph


def test_the_stages_are_found():
    assert stages() == ["post_training_quantizer", "pusher", "qat_fine_tuner", "representative_dataset_gen",
                        "tflite_evaluator", "trainer"]


@pytest.mark.parametrize("stage", stages())
def test_no_stage_imports_another_stage(stage):
    files = module_files()
    others = [f"{NS}.{s}" for s in stages() if s != stage]
    for path in sorted((COMPONENTS / stage).rglob("*.py")):
        name = next(n for n, p in files.items() if p == path)
        for module in imported_modules(path, name):
            for other in others:
                assert not (module == other or module.startswith(other + ".")), (
                    f"{path.relative_to(REPO_ROOT)} imports {module}: stages share code through the contracts, "
                    "the settings and the libraries (tfx_quantization.training, tfx_quantization.quantization) only")


def test_the_pure_library_imports_no_tfx_and_no_stage():
    stage_packages = [f"{NS}.{s}" for s in stages()]
    for path in sorted((COMPONENTS / "quantization").rglob("*.py")):
        for module in imported_modules(path, f"{NS}.quantization.x"):
            assert not (module == "tfx" or module.startswith("tfx.")), f"{path} imports {module}"
            assert not any(module == s or module.startswith(s + ".") for s in stage_packages), f"{path} imports {module}"


def test_no_import_cycle():
    try:
        order = list(graphlib.TopologicalSorter(import_graph()).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")
    assert f"{NS}.settings" in order and f"{NS}.model_contract" in order


def test_the_cycle_check_sees_a_cycle():
    graph = import_graph()
    graph[f"{NS}.model_contract"].add(f"{NS}.settings")  # the cycle the contract once had
    with pytest.raises(graphlib.CycleError):
        list(graphlib.TopologicalSorter(graph).static_order())


def test_contracts_and_settings_load_without_tensorflow():
    code = (f"import sys, {NS}, {NS}.contracts, {NS}.settings, {NS}.pipeline.config\n"
            "heavy = [m for m in ('tensorflow', 'tfx', 'apache_beam') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], cwd="/", check=True)


def test_importing_the_package_changes_nothing_process_wide():
    """No environment variable set, no logging handler or level changed, no TensorFlow loaded:
    a platform team's process stays theirs."""
    code = ("import logging, os, sys\n"
            "env, root = dict(os.environ), (list(logging.getLogger().handlers), logging.getLogger().level)\n"
            f"import {NS}\n"
            f"from {NS} import PipelineConfig, GateSettings, ModelContract\n"
            "assert dict(os.environ) == env, set(os.environ.items()) ^ set(env.items())\n"
            "assert (list(logging.getLogger().handlers), logging.getLogger().level) == root\n"
            "assert 'tensorflow' not in sys.modules\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", code], cwd="/", check=True, env=env)


def test_the_checker_sees_a_cross_stage_import():
    fake = COMPONENTS / "pusher" / "_boundary_probe.py"
    fake.write_text(f"from {NS}.tflite_evaluator.evaluate import evaluate_models\n")
    try:
        with pytest.raises(AssertionError, match=f"imports {NS}.tflite_evaluator.evaluate"):
            test_no_stage_imports_another_stage("pusher")
    finally:
        fake.unlink()
