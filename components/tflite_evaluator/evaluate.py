"""Evaluates every variant against the float model, applies the gate, selects, reports.

`evaluate_models` is what the executor calls: plain paths in, files and a decision out.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import os
from pathlib import Path
from typing import Callable, Dict, Optional

import apache_beam as beam
import numpy as np
import tensorflow as tf

from components.fsutil import staged_dir, write_json_atomic
from components.post_training_quantizer.quantize import OK, read_manifest
from components.quantization import data
from components.quantization.model_spec import ModelSpec
from components.quantization.runner import TFLiteRunner
from components.tflite_evaluator import evaluation, gate, report

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


@dataclasses.dataclass
class EvalParams:
    gate: gate.GateConfig = dataclasses.field(default_factory=gate.GateConfig)
    top_k: int = 5
    latency_runs: int = 50
    latency_warmup: int = 5
    num_threads: int = 1
    batch_size: int = 256

    def validate(self) -> None:
        for name in ("top_k", "latency_runs", "num_threads", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")


def _first_input(files, spec: ModelSpec, split_dir: str) -> np.ndarray:
    first = next(data.iter_serialized(files), None)
    if first is None:
        raise ValueError(f"the eval split in {split_dir} is empty: nothing to evaluate, so nothing can be blessed")
    data.inspect_examples(files, spec.feature_keys, spec.label_key, spec.values_per_key)
    x, _ = data.parse_numpy([first], spec)
    return x[0]


def _prepare(name: str, path: str, spec: ModelSpec, example: np.ndarray, params: EvalParams) -> dict:
    """Loads one TFLite model, checks its input against the examples, times it."""
    runner = TFLiteRunner(path, num_threads=params.num_threads)
    if runner.input_shape != spec.input_shape:
        return {"error": f"input spec mismatch: the model takes {runner.input_shape}, the examples give {spec.input_shape}"}
    timing = runner.time_single_example(example, runs=params.latency_runs, warmup=params.latency_warmup)
    log.info("%s: single-example latency median %.4f ms (p90 %.4f, %d threads)", name,
             timing["latency_ms_median"], timing["latency_ms_p90"], params.num_threads)
    return dict(timing, size_bytes=os.path.getsize(path))


def evaluate_models(
    eval_split_dir: str,
    float_model_dir: str,
    quantized_dir: str,
    out_dir: str,
    params: EvalParams,
    pipeline_factory: Callable[[], beam.Pipeline] = beam.Pipeline,
    baseline_tflite: Optional[str] = None,
    baseline_info: Optional[dict] = None,
) -> dict:
    params.validate()
    manifest = read_manifest(quantized_dir)
    params.gate.validate(list(manifest["variants"]))
    spec = ModelSpec.read(float_model_dir)
    files = data.split_files(eval_split_dir)
    example = _first_input(files, spec, eval_split_dir)

    figures: Dict[str, dict] = {}
    tflite: Dict[str, str] = {}
    for name, entry in manifest["variants"].items():
        if entry["status"] != OK:
            figures[name] = {"error": f"not built: {entry['reason']}"}
            continue
        path = os.path.join(quantized_dir, entry["file"])
        figures[name] = _prepare(name, path, spec, example, params)
        if "error" not in figures[name]:
            tflite[name] = path
    if not tflite:
        reasons = {n: f["error"] for n, f in figures.items()}
        raise ValueError(f"no variant can be evaluated: {reasons}")
    baseline_fig = None
    if baseline_tflite:
        baseline_fig = _prepare(evaluation.BASELINE, baseline_tflite, spec, example, params)
        if "error" in baseline_fig:
            log.warning("Deployed baseline cannot be evaluated on these examples: %s", baseline_fig["error"])
        else:
            tflite[evaluation.BASELINE] = baseline_tflite

    with staged_dir(out_dir) as staging:
        log.info("Evaluating %d TFLite model(s) and the float model over %s", len(tflite), eval_split_dir)
        counts = evaluation.run_evaluation(
            pipeline_factory, eval_pattern=os.path.join(eval_split_dir, "*"), tflite_models=tflite,
            float_model_dir=float_model_dir, spec_json=spec.to_json(),
            output_path=str(staging / "counts.json"), num_threads=params.num_threads, top_k=params.top_k,
            batch_size=params.batch_size,
        )
        labels = counts.get(evaluation.LABELS, {"n": 0, "invalid": 0})
        if labels["invalid"]:
            raise ValueError(
                f"{labels['invalid']} of {labels['n']} eval examples have a label outside 0..{spec.num_classes - 1}: "
                f"fix the data or num_classes; nothing is blessed on bad labels"
            )
        metrics = evaluation.metrics_from_counts(counts, params.top_k)
        float_metrics = metrics.pop(evaluation.FLOAT_MODEL)
        for name, m in metrics.items():
            target = baseline_fig if name == evaluation.BASELINE else figures[name]
            target.update(m)
            if m["non_finite_outputs"]:
                target["error"] = f"non-finite outputs on {m['non_finite_outputs']} example(s)"
        metric = params.gate.metric
        float_value = float_metrics[metric]
        for fig in figures.values():
            if _is_number(fig.get(metric)) and _is_number(float_value):
                fig["accuracy_drop"] = float_value - fig[metric]
                fig["relative_drop"] = (float_value - fig[metric]) / float_value if float_value else math.nan
        baseline_value = None
        if baseline_fig and "error" not in baseline_fig:
            baseline_value = baseline_fig[metric]
        verdicts = gate.judge(figures, float_value, params.gate, baseline_value)
        selected = gate.select(figures, verdicts, params.gate)
        result = {
            "blessed": selected is not None,
            "selected_variant": selected,
            "metric": metric,
            "float_model": float_metrics,
            "variants": figures,
            "verdicts": verdicts,
            "baseline": dict(baseline_fig or {}, **(baseline_info or {})) if baseline_tflite else None,
            "thresholds": dataclasses.asdict(params.gate),
            "evaluation": {k: v for k, v in dataclasses.asdict(params).items() if k != "gate"},
            "host": {"note": "latency is measured on this host's CPU with XNNPACK, not on a device",
                     "tensorflow_version": tf.__version__, "cpu_count": os.cpu_count()},
            "num_eval_examples": labels["n"],
            "manifest": {n: {k: e.get(k) for k in ("size_bytes", "sha256", "file", "status", "reason")}
                         for n, e in manifest["variants"].items()},
            # The accuracy-aware search's per-layer errors and steps, for the report.
            "selective": manifest["variants"].get("selective_integer", {}).get("selective"),
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }
        os.unlink(staging / "counts.json")
        write_json_atomic(staging / METRICS_FILE, _jsonable(result))
        report.write_report(str(staging), result)
    log.info("Gate: %s", {n: v["passed"] for n, v in verdicts.items()})
    log.info("Selected variant: %s", selected)
    return result


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return _jsonable(float(obj))
    return obj


def read_metrics(evaluation_dir: str) -> dict:
    import json

    return json.loads(Path(evaluation_dir, METRICS_FILE).read_text())
