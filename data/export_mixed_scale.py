"""Writes data/mixed_scale/mixed_scale.csv: the hard quantization workload, generated from a
fixed seed (no download), byte for byte the same on every run.

3,000 rows, 8 float features and a label of 4 classes. Four features (f00..f03) are on the
scale of hundreds, four (f04..f07) on the scale of one; the class depends on both groups
(the argmax of a fixed linear score over all eight features, after each group is brought to
unit scale, plus a little noise). A model that normalizes its input inside the graph (the
built-in `tabular_mlp`, a Normalization layer first) is accurate in float; quantized with
one int8 scale for the whole input tensor, the small features round to a few steps and the
model loses much of what it knew (BENCHMARKS.md, "The hard workload").

    .venv/bin/python data/export_mixed_scale.py [--out PATH]
"""
import argparse
import csv
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "mixed_scale" / "mixed_scale.csv"
FEATURES = [f"f{i:02d}" for i in range(8)]
ROWS, CLASSES, SEED = 3000, 4, 20261124
SCALES = np.array([300.0, 150.0, 600.0, 200.0, 1.0, 0.5, 2.0, 1.0])


def rows():
    rng = np.random.RandomState(SEED)
    z = rng.standard_normal((ROWS, len(FEATURES)))  # unit-scale signal
    weights = rng.standard_normal((len(FEATURES), CLASSES))
    scores = z @ weights + 0.3 * rng.standard_normal((ROWS, CLASSES))
    labels = scores.argmax(axis=1)
    x = z * SCALES
    for values, label in zip(x, labels):
        yield [f"{v:.4f}" for v in values] + [int(label)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT))
    out = Path(parser.parse_args().out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(FEATURES + ["label"])
        writer.writerows(rows())
    print(out)


if __name__ == "__main__":
    main()
