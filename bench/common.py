"""Shared by the benchmark sections: digits examples, timing helpers, statistics."""
from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Dict, List, Sequence

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


def summary(values: Sequence[float]) -> Dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt_range(s: Dict[str, float], spec: str = "{:.4f}") -> str:
    return f"{spec.format(s['median'])} ({spec.format(s['min'])}–{spec.format(s['max'])})"


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
