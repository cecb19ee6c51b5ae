"""Writes the bundled digits as tf.Example TFRecords (gzipped, as ImportExampleGen reads
them), with an int64 `label` and either

  (default)  one float `image` feature: 64 values, 0..1 (README, "Your own data and model"):
                 .venv/bin/python data/examples/digits_to_tfrecord.py /tmp/mydigits
             -> <out>/digits.tfrecord.gz
  --png      one `image_raw` feature: an 8x8 grayscale PNG, the layout of TFX's image
             examples; pixel values 0..16 become round(v * 255 / 16) (README, "Images"):
                 .venv/bin/python data/examples/digits_to_tfrecord.py --png /tmp/pngdigits
             -> <out>/digits_png.tfrecord.gz
"""
import argparse
import csv
from pathlib import Path

DIGITS_CSV = Path(__file__).resolve().parents[1] / "digits" / "digits.csv"
PIXELS = [f"pixel_{i:02d}" for i in range(64)]


def float_examples(rows):
    """Serialized tf.Examples with the float `image` feature, one per digits CSV row."""
    import tensorflow as tf

    for row in rows:
        yield tf.train.Example(features=tf.train.Features(feature={
            "image": tf.train.Feature(float_list=tf.train.FloatList(value=[int(row[k]) / 16.0 for k in PIXELS])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["label"])])),
        })).SerializeToString()


def png_examples(rows):
    """Serialized tf.Examples with the PNG `image_raw` feature, one per digits CSV row."""
    import numpy as np
    import tensorflow as tf

    for row in rows:
        pixels = np.array([int(row[k]) for k in PIXELS], dtype=np.float64)
        image = np.round(pixels * 255.0 / 16.0).astype(np.uint8).reshape(8, 8, 1)
        yield tf.train.Example(features=tf.train.Features(feature={
            "image_raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_png(image).numpy()])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["label"])])),
        })).SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write the .tfrecord.gz file into (created)")
    parser.add_argument("--png", action="store_true", help="PNG images in `image_raw` instead of float pixels")
    args = parser.parse_args()
    import tensorflow as tf

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("digits_png.tfrecord.gz" if args.png else "digits.tfrecord.gz")
    with open(DIGITS_CSV, newline="") as f, tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for record in (png_examples if args.png else float_examples)(csv.DictReader(f)):
            writer.write(record)
    print(path)


if __name__ == "__main__":
    main()
