"""Shared by the benchmark sections: digits examples, timing helpers, statistics."""
from __future__ import annotations

import contextlib
import csv
import re
import statistics
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from tfx_quantization.quantization import data

REPO = Path(__file__).resolve().parents[1]
PIXEL_KEYS = [f"pixel_{i:02d}" for i in range(64)]  # the digits CSV's columns (data/README.md), row-major


def digits_rows() -> List[dict]:
    with open(REPO / "data" / "digits" / "digits.csv", newline="") as f:
        return [{k: int(v) for k, v in row.items()} for row in csv.DictReader(f)]


SPLIT_OF = {"train": lambda i: i % 3 and i % 9 != 1, "validation": lambda i: i % 9 == 1, "eval": lambda i: not i % 3}


def write_splits(root: Path, rows: List[dict]) -> Dict[str, str]:
    """Rows as an ExampleGen would store them: every third row in eval (the gate's), one in
    nine in validation (the selective search's), the rest in train."""
    out = {}
    for split, keep in SPLIT_OF.items():
        folder = root / f"Split-{split}"
        data.write_split(folder, (data.to_example(r) for i, r in enumerate(rows) if keep(i)))
        out[split] = str(folder)
    return out


def write_digits_splits(root: Path) -> Dict[str, str]:
    return write_splits(root, digits_rows())


def mixed_scale_rows() -> List[dict]:
    """The hard workload (data/export_mixed_scale.py)."""
    with open(REPO / "data" / "mixed_scale" / "mixed_scale.csv", newline="") as f:
        return [{k: int(v) if k == "label" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_image_eval_set(folder: Path, n: int, seed: int = 0) -> str:
    """n eval examples with one float `image` feature (64 values) and `label`: the digits
    eval rows replicated with small Gaussian noise (clipped to 0..16). Uncompressed, one
    file: the same input for our evaluator and TFMA."""
    rows = [r for i, r in enumerate(digits_rows()) if not i % 3]
    pixels = np.array([[r[k] for k in PIXEL_KEYS] for r in rows], np.float32)
    labels = np.array([r["label"] for r in rows])
    rng = np.random.RandomState(seed)
    idx = np.arange(n) % len(rows)
    noisy = np.clip(pixels[idx] + rng.normal(0, 0.5, (n, 64)), 0, 16).astype(np.float32)
    examples = (data.to_example({"image": noisy[i], "label": int(labels[idx[i]])}) for i in range(n))
    return data.write_split(folder, examples, shards=1, compress=False)[0]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int_entry(key: str, value: int) -> bytes:
    """One map entry of tf.train.Features for `key` holding one int64 in 0..127, framed as
    field 1 of Features: {key: Feature{int64_list: Int64List{value: [value]}}} in protobuf's
    wire format (packed varint)."""
    name = key.encode()
    feature = b"\x1a\x03\x0a\x01" + bytes([value])  # Feature.int64_list (3) <- Int64List.value (1), packed
    entry = b"\x0a" + _varint(len(name)) + name + b"\x12" + _varint(len(feature)) + feature
    return b"\x0a" + _varint(len(entry)) + entry


def digits_like_records(n: int, seed: int, chunk: int = 10000) -> Iterator[bytes]:
    """n serialized tf.Examples shaped as CsvExampleGen writes the digits CSV (64 int64
    pixel columns 0..16 and an int64 `label`): the digits eval rows (every third) in a
    seeded random order, each pixel moved by rounded Gaussian noise (sd 1) and clipped to
    0..16. Encoded from a table of each (column, value) entry's bytes (data.to_example would
    take ~0.1 ms an example); parses to the same tf.Example as data.to_example of the row."""
    rows = [r for i, r in enumerate(digits_rows()) if not i % 3]
    pixels = np.array([[r[k] for k in PIXEL_KEYS] for r in rows], np.int64)
    labels = np.array([r["label"] for r in rows], np.int64)
    table = [[_int_entry(k, v) for v in range(17)] for k in PIXEL_KEYS]
    label_entries = [_int_entry("label", v) for v in range(10)]
    rng = np.random.RandomState(seed)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        pick = rng.randint(0, len(rows), size)
        noisy = np.clip(pixels[pick] + np.rint(rng.normal(0, 1, (size, 64))).astype(np.int64), 0, 16).tolist()
        for values, label in zip(noisy, labels[pick].tolist()):
            body = b"".join([column[v] for column, v in zip(table, values)]) + label_entries[label]
            yield b"\x0a" + _varint(len(body)) + body


def write_records(folder: Path, records: Iterator[bytes], shards: int) -> List[str]:
    """Streams serialized records into `shards` gzipped TFRecord files (round robin), as
    ExampleGen lays out a split, without holding them in memory. Returns the paths."""
    import tensorflow as tf

    folder.mkdir(parents=True, exist_ok=True)
    paths = [str(folder / f"data_tfrecord-{s:05d}-of-{shards:05d}.gz") for s in range(shards)]
    writers = [tf.io.TFRecordWriter(p, options="GZIP") for p in paths]
    for i, record in enumerate(records):
        writers[i % shards].write(record)
    for w in writers:
        w.close()
    return paths


@contextlib.contextmanager
def peak_rss(every: float = 0.25) -> Iterator[List[int]]:
    """Samples (every `every` s; each sample scans /proc for children, so not more often: at
    20 ms the sampler took a fifth of a 1-worker pass's time) the summed resident set, in bytes, of this process and every
    process it started (Beam workers); the yielded list holds the peak once the block ends.
    ru_maxrss is not used: on Linux a child's figure includes the parent's memory at fork."""
    import psutil

    peak, done = [0], threading.Event()

    def sample():
        me = psutil.Process()
        while not done.is_set():
            try:
                total = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
                peak[0] = max(peak[0], total)
            except psutil.Error:
                pass
            time.sleep(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()


def summary(values: Sequence[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt_range(s: Dict[str, float], spec: str = "{:.4f}") -> str:
    return f"{spec.format(s['median'])} ({spec.format(s['min'])}–{spec.format(s['max'])})"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def replace_section(text: str, title: str, lines: Sequence[str]) -> str:
    """BENCHMARKS.md's text with the section headed `title` ("## N. ...") replaced by `lines`,
    up to the next "## " heading or the "Total `make bench` time" line; when it has none, put
    before the first later-numbered section, else at the end. For the sections one can run
    alone (make bench-million, make bench-choice)."""
    body = "\n".join(lines).rstrip("\n") + "\n"
    if title not in text:
        number = int(title.split()[1].rstrip("."))
        later = next((m for m in re.finditer(r"^## ([0-9]+)\. ", text, re.M) if int(m.group(1)) > number), None)
        if later:
            return text[:later.start()] + body + "\n" + text[later.start():]
        return text.rstrip("\n") + "\n\n" + body
    head, rest = text.split(title, 1)
    ends = [i for i in (rest.find("\n## "), rest.find("\nTotal `make bench` time")) if i >= 0]
    tail = rest[min(ends) + 1:] if ends else ""
    return head + body + ("\n" + tail if tail else "")


def method_variants(model_dir: str, calibration, spec, methods: Sequence[str], io_type: Optional[str] = "int8",
                    percentile: float = 99.99) -> Dict[str, bytes]:
    """{method: the model's integer variant with that method's activation ranges}, every one
    from one calibration and one collection of statistics (ranges.collect), as the sweep of
    quantization/ranges.py derives them; io_type "int8" is integer_only's I/O, None
    full_integer's float I/O."""
    from tfx_quantization.quantization import ranges, selective

    calibrated, _ = selective.calibrate(model_dir, calibration, spec.signature)
    stats = ranges.collect(calibrated, calibration)
    return {m: ranges.build_variant(ranges.write_ranges(calibrated, ranges.ranges_for(stats, m, percentile)), io_type)
            for m in methods}
