"""Regenerates data/breast_cancer/breast_cancer.csv from scikit-learn's bundled breast
cancer (Wisconsin diagnostic) dataset: the imbalanced binary workload (issue #30).

30 real-valued features of cell nuclei measured on a digitized image (radius, texture,
perimeter, area, ... : mean, standard error and worst value), in their original units and
very different scales; `malignant` is 1 for a malignant tumour, 0 for a benign one. Every
benign case is kept and every second malignant one (in scikit-learn's order), so the
positive class is 23 % of 463 rows, the shape of click, fraud or screening data where
accuracy says little (always answering "benign" scores 0.77) and ROC AUC is the measure.
Street, Wolberg and Mangasarian (1993), Nuclear feature extraction for breast tumor
diagnosis, Proc. SPIE 1905.

The output is byte-for-byte deterministic (values as scikit-learn gives them, '\\n' line
endings). Run from anywhere:

    .venv/bin/python data/export_breast_cancer.py [--out PATH]
"""
import csv
import io
import sys
from pathlib import Path

LABEL_KEY = "malignant"
DEFAULT_OUT = Path(__file__).resolve().parent / "breast_cancer" / "breast_cancer.csv"


def feature_keys():
    """scikit-learn's feature names as column names: 'mean radius' -> 'mean_radius'."""
    from sklearn.datasets import load_breast_cancer  # bundled with scikit-learn: no download

    return [name.replace(" ", "_") for name in load_breast_cancer().feature_names]


def breast_cancer_csv_bytes() -> bytes:
    """The CSV content: a header, then one row per kept case (30 features, the label)."""
    from sklearn.datasets import load_breast_cancer

    cancer = load_breast_cancer()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(feature_keys() + [LABEL_KEY])
    malignant_seen = 0
    for features, target in zip(cancer.data, cancer.target):
        malignant = int(target == 0)  # scikit-learn: 0 malignant, 1 benign
        if malignant:
            malignant_seen += 1
            if malignant_seen % 2 == 0:
                continue
        writer.writerow([repr(float(v)) for v in features] + [malignant])
    return buf.getvalue().encode("ascii")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, run as a script
    from export_digits import main

    main(__doc__, DEFAULT_OUT, breast_cancer_csv_bytes)
