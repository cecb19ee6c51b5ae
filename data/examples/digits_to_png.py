"""Writes the bundled digits as tf.Example TFRecords in the layout of TFX's image examples:
`image_raw`, one 8x8 grayscale PNG (bytes), and an int64 `label`; the input of README's
"Images" example. Pixel values 0..16 become round(v * 255 / 16).

    .venv/bin/python data/examples/digits_to_png.py /tmp/pngdigits

Writes <out>/digits_png.tfrecord.gz (gzipped, as ImportExampleGen reads it).
"""
import argparse
import csv
from pathlib import Path

DIGITS_CSV = Path(__file__).resolve().parents[1] / "digits" / "digits.csv"


def png_examples(rows):
    """Serialized tf.Examples, one per digits CSV row (a dict of its columns)."""
    import numpy as np
    import tensorflow as tf

    for row in rows:
        pixels = np.array([int(row[f"pixel_{i:02d}"]) for i in range(64)], dtype=np.float64)
        image = np.round(pixels * 255.0 / 16.0).astype(np.uint8).reshape(8, 8, 1)
        yield tf.train.Example(features=tf.train.Features(feature={
            "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["label"])])),
        })).SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write digits_png.tfrecord.gz into (created)")
    out = Path(parser.parse_args().out)
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    path = out / "digits_png.tfrecord.gz"
    with open(DIGITS_CSV, newline="") as f, tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for record in png_examples(csv.DictReader(f)):
            writer.write(record)
    print(path)


if __name__ == "__main__":
    main()
