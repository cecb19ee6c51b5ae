"""Regenerates data/digits/digits.csv from scikit-learn's bundled digits dataset.

The output is byte-for-byte deterministic: rows in scikit-learn's order, integer pixel
values, '\n' line endings, no timestamps. Run from anywhere:

    .venv/bin/python data/export_digits.py [--out PATH]
"""
import argparse
import csv
import io
from pathlib import Path

NUM_PIXELS = 64
PIXEL_KEYS = [f"pixel_{i:02d}" for i in range(NUM_PIXELS)]
LABEL_KEY = "label"
DEFAULT_OUT = Path(__file__).resolve().parent / "digits" / "digits.csv"


def digits_csv_bytes() -> bytes:
    """The CSV content: a header, then one row per image (64 pixels in 0..16, label)."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PIXEL_KEYS + [LABEL_KEY])
    for pixels, label in zip(digits.data, digits.target):
        writer.writerow([int(v) for v in pixels] + [int(label)])
    return buf.getvalue().encode("ascii")


def write_atomically(out: Path, content: bytes) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(content)
    tmp.replace(out)  # never leave a half-written CSV where ExampleGen would read it
    return out


def export(out: Path = DEFAULT_OUT) -> Path:
    return write_atomically(out, digits_csv_bytes())


def main(doc: str, default_out: Path, content) -> None:
    """The export scripts' command line: --out PATH (default `default_out`), then write."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_out)
    print(write_atomically(parser.parse_args().out, content()))


if __name__ == "__main__":
    main(__doc__, DEFAULT_OUT, digits_csv_bytes)
