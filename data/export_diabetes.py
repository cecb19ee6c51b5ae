"""Regenerates data/diabetes/diabetes.csv from scikit-learn's bundled diabetes dataset.

The regression workload (issue #30): 442 patients, ten baseline measurements in their
original units (`load_diabetes(scaled=False)`: age in years, sex 1/2, body mass index, mean
blood pressure, six blood serum measurements s1..s6) and `target`, a quantitative measure
of disease progression one year later (25..346). Efron, Hastie, Johnstone and Tibshirani
(2004), "Least Angle Regression", Annals of Statistics 32(2).

The output is byte-for-byte deterministic: rows in scikit-learn's order, values as
scikit-learn gives them (shortest repr), the target written with a decimal point so that
CsvExampleGen stores it as a float feature, '\\n' line endings. Run from anywhere:

    .venv/bin/python data/export_diabetes.py [--out PATH]
"""
import csv
import io
import sys
from pathlib import Path

FEATURE_KEYS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
LABEL_KEY = "target"
DEFAULT_OUT = Path(__file__).resolve().parent / "diabetes" / "diabetes.csv"


def _number(value: float) -> str:
    """An integral value without its '.0' (read as int64), any other as Python prints it."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def diabetes_csv_bytes() -> bytes:
    """The CSV content: a header, then one row per patient (ten features, the target)."""
    from sklearn.datasets import load_diabetes  # bundled with scikit-learn: no download

    diabetes = load_diabetes(scaled=False)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FEATURE_KEYS + [LABEL_KEY])
    for features, target in zip(diabetes.data, diabetes.target):
        writer.writerow([_number(v) for v in features] + [f"{float(target):.1f}"])
    return buf.getvalue().encode("ascii")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, run as a script
    from export_digits import main

    main(__doc__, DEFAULT_OUT, diabetes_csv_bytes)
