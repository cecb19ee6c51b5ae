"""Regenerates data/digits_two_heads/digits_two_heads.csv: scikit-learn's bundled digits with a
second target, for the multi-output workload (issue #30).

Each row is data/digits/digits.csv's (64 pixels in 0..16, `label` 0..9) plus `dark_pixels`,
the number of the image's 64 pixels at intensity 8 or more (a count, 0..64, written with a
decimal point so that CsvExampleGen stores it as a float feature): what a count head of a
two-headed model regresses beside the class head. A threshold of the pixels, not a linear
function of them, so the head has to learn it. Byte-for-byte deterministic, as the digits
file is. Run from anywhere:

    .venv/bin/python data/export_digits_two_heads.py [--out PATH]
"""
import csv
import io
import sys
from pathlib import Path

COUNT_KEY = "dark_pixels"
DARK = 8  # a pixel at this intensity (of 16) or more counts
DEFAULT_OUT = Path(__file__).resolve().parent / "digits_two_heads" / "digits_two_heads.csv"


def two_heads_csv_bytes() -> bytes:
    """The CSV content: the digits file's header and rows, each with `dark_pixels` appended."""
    from export_digits import LABEL_KEY, PIXEL_KEYS
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PIXEL_KEYS + [LABEL_KEY, COUNT_KEY])
    for pixels, label in zip(digits.data, digits.target):
        writer.writerow([int(v) for v in pixels] + [int(label), f"{float((pixels >= DARK).sum()):.1f}"])
    return buf.getvalue().encode("ascii")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling, run as a script
    from export_digits import main

    main(__doc__, DEFAULT_OUT, two_heads_csv_bytes)
