"""The foundation: shipped data, the interpreter lookup, the config."""
import csv
import importlib.util
import os
import subprocess
import sys


from tests.conftest import REPO_ROOT

DATA_CSV = REPO_ROOT / "data" / "digits" / "digits.csv"


def _load_export_module():
    spec = importlib.util.spec_from_file_location("export_digits", REPO_ROOT / "data" / "export_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_export_regenerates_identical_bytes(tmp_path):
    out = _load_export_module().export(tmp_path / "digits.csv")
    assert out.read_bytes() == DATA_CSV.read_bytes()


def test_shipped_data_is_complete():
    with DATA_CSV.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header == [f"pixel_{i:02d}" for i in range(64)] + ["label"]
    assert len(body) == 1797
    pixels = [int(v) for row in body for v in row[:64]]
    labels = [int(row[64]) for row in body]
    assert min(pixels) == 0 and max(pixels) == 16
    assert sorted(set(labels)) == list(range(10))


def test_python310_lookup_finds_an_interpreter():
    out = subprocess.run(
        [str(REPO_ROOT / "scripts" / "find_python310.sh")],
        env={k: v for k, v in os.environ.items() if k != "QP_PYTHON"},
        capture_output=True, text=True, check=True,
    )
    version = subprocess.run(
        [out.stdout.strip(), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    )
    assert version.stdout.strip() == "(3, 10)"


def test_setup_without_python310_stops_with_a_clear_message(tmp_path):
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-C", str(REPO_ROOT), "setup", f"VENV={venv}",
         f"QP_PYTHON={tmp_path / 'missing' / 'python3.10'}"],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "no Python 3.10 interpreter found" in result.stderr
    assert "QP_PYTHON" in result.stderr and "pyenv install" in result.stderr
    assert not venv.exists(), "nothing may be half-created"


def test_mixed_scale_workload_regenerates_identical_bytes(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "mixed_scale.csv"
    subprocess.run([sys.executable, str(REPO_ROOT / "data" / "export_mixed_scale.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_bytes() == (REPO_ROOT / "data" / "mixed_scale" / "mixed_scale.csv").read_bytes()
