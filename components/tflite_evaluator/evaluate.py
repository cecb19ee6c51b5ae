"""Evaluates every variant against the float model, applies the gate, selects, reports.

`evaluate_models` is what the executor calls: plain paths in, files and a decision out.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
from typing import Callable, Dict, Optional

import apache_beam as beam
import numpy as np
import tensorflow as tf

from components import contracts, fsutil
from components.quantization import data
from components.quantization.interpreter import TFLiteRunner
from components.quantization.model_spec import ModelSpec
from components.quantization.stats import is_finite
from components.settings import GateSettings
from components.tflite_evaluator import beam_pass, gate, report

log = logging.getLogger(__name__)


def _first_input(files, spec: ModelSpec, split_dir: str) -> np.ndarray:
    first = next(data.iter_serialized(files), None)
    if first is None:
        raise ValueError(f"the eval split in {split_dir} is empty: nothing to evaluate, so nothing can be blessed")
    data.check_examples(files, spec.feature_keys, spec.label_key, spec.values_per_key, spec.num_classes)
    x, _ = data.parse_numpy([first], spec)
    return x[0]


def _prepare(name: str, path: str, spec: ModelSpec, example: np.ndarray, params: GateSettings) -> dict:
    """Loads one TFLite model, checks its input against the examples, times it."""
    runner = TFLiteRunner(path, num_threads=params.num_threads)
    if runner.input_shape != spec.input_shape:
        return {"error": f"input spec mismatch: the model takes {runner.input_shape}, the examples give {spec.input_shape}"}
    timing = runner.time_single_example(example, runs=params.latency_runs, warmup=params.latency_warmup)
    log.info("%s: single-example latency median %.4f ms (p90 %.4f, %d threads)", name,
             timing["latency_ms_median"], timing["latency_ms_p90"], params.num_threads)
    return dict(timing, size_bytes=fsutil.size(path))


def evaluate_models(
    eval_split_dir: str,
    float_model_dir: str,
    quantized_dir: str,
    out_dir: str,
    params: GateSettings,
    pipeline_factory: Callable[[], beam.Pipeline] = beam.Pipeline,
    baseline_tflite: Optional[str] = None,
    baseline_info: Optional[dict] = None,
) -> dict:
    manifest = contracts.read_manifest(quantized_dir)
    spec = ModelSpec.read(float_model_dir)
    files = data.split_files(eval_split_dir)
    example = _first_input(files, spec, eval_split_dir)

    figures: Dict[str, dict] = {}
    tflite: Dict[str, str] = {}
    for name, entry in manifest["variants"].items():
        if entry["status"] != contracts.OK:
            figures[name] = {"error": f"not built: {entry['reason']}"}
            continue
        path = contracts.variant_path(quantized_dir, manifest, name)
        figures[name] = _prepare(name, path, spec, example, params)
        if "error" not in figures[name]:
            tflite[name] = path
    if not tflite:
        reasons = {n: f["error"] for n, f in figures.items()}
        raise ValueError(f"no variant can be evaluated: {reasons}")
    baseline_fig = None
    if baseline_tflite:
        baseline_fig = _prepare(beam_pass.BASELINE, baseline_tflite, spec, example, params)
        if "error" in baseline_fig:
            log.warning("Deployed baseline cannot be evaluated on these examples: %s", baseline_fig["error"])
        else:
            tflite[beam_pass.BASELINE] = baseline_tflite

    with fsutil.staged_dir(out_dir, commit_last=[contracts.METRICS_FILE]) as staging:
        log.info("Evaluating %d TFLite model(s) and the float model over %s", len(tflite), eval_split_dir)
        counts = beam_pass.run_evaluation(
            pipeline_factory, eval_pattern=fsutil.join(eval_split_dir, "*"), tflite_models=tflite,
            float_model_dir=float_model_dir, spec_json=spec.to_json(),
            output_path=str(staging / "counts.json"), num_threads=params.num_threads, top_k=params.top_k,
            batch_size=params.eval_batch_size,
        )
        labels = counts.get(beam_pass.LABELS, {"n": 0, "invalid": 0})
        if labels["invalid"]:
            raise ValueError(
                f"{labels['invalid']} of {labels['n']} eval examples have a label outside 0..{spec.num_classes - 1}: "
                f"fix the data or num_classes; nothing is blessed on bad labels"
            )
        metrics = beam_pass.metrics_from_counts(counts, params.top_k)
        float_metrics = metrics.pop(beam_pass.FLOAT_MODEL)
        for name, m in metrics.items():
            target = baseline_fig if name == beam_pass.BASELINE else figures[name]
            target.update(m)
            if m["non_finite_outputs"]:
                target["error"] = f"non-finite outputs on {m['non_finite_outputs']} example(s)"
        metric = params.metric
        float_value = float_metrics[metric]
        for fig in figures.values():
            if is_finite(fig.get(metric)) and is_finite(float_value):
                fig["accuracy_drop"] = float_value - fig[metric]
                fig["relative_drop"] = (float_value - fig[metric]) / float_value if float_value else math.nan
        baseline_value = None
        if baseline_fig and "error" not in baseline_fig:
            baseline_value = baseline_fig[metric]
        verdicts = gate.judge(figures, float_value, params, baseline_value)
        selected = gate.select(figures, verdicts, params)
        result = {
            "blessed": selected is not None,
            "selected_variant": selected,
            "metric": metric,
            "float_model": float_metrics,
            "variants": figures,
            "verdicts": verdicts,
            "baseline": dict(baseline_fig or {}, **(baseline_info or {})) if baseline_tflite else None,
            "settings": params.model_dump(),
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
        (staging / contracts.METRICS_FILE).write_bytes(fsutil.to_json(_jsonable(result)))
        report.write_report(str(staging), result)
    log.info("Gate: %s", {n: v["passed"] for n, v in verdicts.items()})
    log.info("Selected variant: %s", selected)
    return result


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

