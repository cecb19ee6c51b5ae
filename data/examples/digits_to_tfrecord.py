"""Writes the bundled digits as tf.Example TFRecords with one float `image` feature (64
values, 0..1) and an int64 `label`: the input of README's "Your own data and model".

    .venv/bin/python data/examples/digits_to_tfrecord.py /tmp/mydigits

Writes <out>/digits.tfrecord.gz (gzipped, as ImportExampleGen reads it).
"""
import argparse
import csv
from pathlib import Path

DIGITS_CSV = Path(__file__).resolve().parents[1] / "digits" / "digits.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write digits.tfrecord.gz into (created)")
    out = Path(parser.parse_args().out)
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    path = out / "digits.tfrecord.gz"
    with open(DIGITS_CSV, newline="") as f, tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for row in csv.DictReader(f):
            pixels = [int(row[f"pixel_{i:02d}"]) / 16.0 for i in range(64)]
            example = tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(float_list=tf.train.FloatList(value=pixels)),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(row["label"])])),
            }))
            writer.write(example.SerializeToString())
    print(path)


if __name__ == "__main__":
    main()
