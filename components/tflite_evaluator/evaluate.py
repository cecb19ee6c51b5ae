"""Evaluates every variant against the float model, applies the gate, selects, reports.

`evaluate_models` is what the executor calls: plain paths in, files and a decision out.
"""
from __future__ import annotations

import datetime
import itertools
import logging
import math
import os
from typing import Callable, Dict, List, Optional

import apache_beam as beam
import numpy as np
import tensorflow as tf

from tfx_quantization import contracts, fsutil
from tfx_quantization.contracts import Decision, Evaluation, VariantBuild
from tfx_quantization.quantization import convert, data, host, metrics, micro
from tfx_quantization.quantization.interpreter import TFLiteRunner
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.quantization.stats import is_finite
from tfx_quantization.settings import GateSettings, ModelContract
from tfx_quantization.tflite_evaluator import beam_pass, gate, report

log = logging.getLogger(__name__)


def _checked(files, spec: ModelSpec, split_dir: str):
    """(the spec with storage dtypes, the first example) after checking every eval example."""
    first = next(data.iter_serialized(files), None)
    if first is None:
        raise ValueError(f"the eval split in {split_dir} is empty: nothing to evaluate, so nothing can be blessed")
    spec = data.check_examples(files, spec)
    x, _ = data.parse_numpy([first], spec)
    return spec, x


def _prepare(name: str, path: str, spec: ModelSpec, example, params: GateSettings) -> dict:
    """Loads one TFLite model, checks its inputs against the examples, times it."""
    runner = TFLiteRunner(path, num_threads=params.num_threads, signature=spec.signature)
    expected = {i.name: i.shape for i in spec.inputs}
    if runner.shapes != expected:
        def shown(shapes):  # one input: its shape alone
            return next(iter(shapes.values())) if len(shapes) == 1 else shapes

        return {"error": f"input spec mismatch: the model takes {shown(runner.shapes)}, the examples give "
                         f"{shown(expected)}"}
    try:
        runner.select_output(spec.output_name)
        for name in spec.output_names[1:]:  # a multi-output model's others, read by signature name
            runner.select_output(name)
        runner.select_output(spec.output_name)
    except ValueError as e:
        return {"error": f"output mismatch: {e}"}
    timing = runner.time_single_example(example, runs=params.latency_runs, warmup=params.latency_warmup)
    log.info("%s: single-example latency median %.4f ms (p90 %.4f, %d threads)", name,
             timing["latency_ms_median"], timing["latency_ms_p90"], params.num_threads)
    io_dtypes = [np.dtype(d["dtype"]).name for d in runner.inputs.values()] + [np.dtype(runner.output["dtype"]).name]
    return dict(timing, size_bytes=fsutil.size(path), io_dtypes=io_dtypes,
                integer_io=all(d in ("int8", "uint8") for d in io_dtypes),
                integer_compute_fraction=convert.integer_compute_fraction(fsutil.read_bytes(path)))


def device_checks(tflite: Dict[str, str], figures: Dict[str, dict], files, spec: ModelSpec,
                  params: GateSettings) -> None:
    """Runs every variant on the target runtimes other than LiteRT (TFLite Micro) over the
    first device_check_examples eval examples; records figures[name]['tflm']. A check that
    fails (the runtime refuses, crashes or times out) is recorded as that variant not running
    there, with a one-line reason; the other variants, the gate and the other targets go on."""
    if not any(t.runtime == gate.TFLM for t in params.targets):
        return
    x, _ = data.parse_numpy(list(itertools.islice(data.iter_serialized(files), params.device_check_examples)), spec)
    for name, path in tflite.items():
        if name == beam_pass.BASELINE:
            continue
        content = fsutil.read_bytes(path)
        try:
            outcome = micro.check(content, x, TFLiteRunner.for_spec(content, spec).predict(x), spec)
        except Exception as e:  # noqa: BLE001 - an optional check: recorded as the variant's failure there, the run goes on
            outcome = {"runs": False, "reason": f"the TFLite Micro check failed: {convert.one_line(e)}",
                       "arena_bytes": None}
        figures[name]["tflm"] = outcome
        log.info("%s on TFLite Micro: %s", name, f"runs, arena {outcome['arena_bytes']} bytes, top-1 agreement "
                 f"{outcome['agreement_with_litert']:.4f}" if outcome["runs"] else f"does not run: {outcome['reason']}")


PLOT_EXAMPLES = 500  # the regression report's scatter and error histogram: the first eval examples


def regression_sample(files, float_model_dir: str, tflite_path: str, spec: ModelSpec,
                      warnings: List[str], n: int = PLOT_EXAMPLES) -> Optional[dict]:
    """The labels and the float model's and a variant's predictions on the first `n` eval
    examples, flattened over the targets ({label, float, variant}: lists of floats), for the
    report's predicted-vs-float scatter and error histogram. A bounded sample: the streamed
    figures keep no example. Optional: a failure is a warning and None."""
    try:
        x, y = data.parse_numpy(list(itertools.islice(data.iter_serialized(files), n)), spec)
        reference = data.Serving(float_model_dir, spec)(x)
        variant = TFLiteRunner.for_spec(fsutil.read_bytes(tflite_path), spec).predict(x)
    except Exception as e:  # noqa: BLE001 - an optional figure: recorded, the evaluation goes on
        warnings.append(f"the report's regression plots were not drawn: {convert.one_line(e)}")
        return None
    return {"label": np.reshape(y, -1).tolist(), "float": np.reshape(reference, -1).tolist(),
            "variant": np.reshape(variant, -1).tolist()}


def evaluate_models(
    eval_split_dir: str,
    float_model_dir: str,
    quantized_dir: str,
    out_dir: str,
    params: GateSettings,
    pipeline_factory: Callable[[], beam.Pipeline] = beam.Pipeline,
    baseline_tflite: Optional[str] = None,
    baseline_info: Optional[dict] = None,
    history: Optional[List[dict]] = None,
    contract: Optional[ModelContract] = None,
    train_split_dir: Optional[str] = None,
) -> Evaluation:
    """Measures every built variant of `quantized_dir` (and the deployed baseline, when
    given) on the eval split, applies the gate, selects; writes metrics.json, outcome.json
    and the report into out_dir. Returns the evaluation metrics.json holds.

    The contract's task decides what is measured and judged (quantization/metrics.py's
    table); `train_split_dir` gives a regression's sanity reference, the training labels'
    mean predicted for every example (without it the check is off, and said so)."""
    manifest = contracts.read_manifest(quantized_dir)
    spec = ModelSpec.read(float_model_dir, contract)
    metric = metrics.gate_metric_of(spec.task, params)
    params = params.model_copy(update={"metric": metric})
    files = data.split_files(eval_split_dir)
    spec, example = _checked(files, spec, eval_split_dir)
    training_mean, no_mean = None, ""
    if spec.task == metrics.REGRESSION:
        if train_split_dir and fsutil.isdir(train_split_dir):
            training_mean = data.label_mean(data.split_files(train_split_dir), spec)
            log.info("Regression sanity reference: the training labels' mean %s", training_mean)
        else:
            no_mean = ("no train split was given, so the regression sanity bound (beat predicting the training mean) "
                       "is off")

    figures: Dict[str, dict] = {}
    tflite: Dict[str, str] = {}
    for name, entry in manifest.variants.items():
        if entry.status == contracts.SKIPPED:  # not built by design: no figures, no verdict (its reason is in `manifest`)
            continue
        if entry.status != contracts.OK:
            figures[name] = {"error": f"not built: {entry.reason}"}
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
            # The artifact's URI, not the local staging folder: a distributed runner's worker writes it.
            output_path=fsutil.join(out_dir, beam_pass.COUNTS_FILE), num_threads=params.num_threads, top_k=params.top_k,
            batch_size=params.eval_batch_size, constant_prediction=training_mean,
        )
        labels = counts.get(beam_pass.LABELS, {"n": 0, "invalid": 0})
        if labels["invalid"]:
            raise ValueError(
                f"{labels['invalid']} of {labels['n']} eval examples have a label outside 0..{spec.num_classes - 1}: "
                f"fix the data or num_classes; nothing is blessed on bad labels"
            )
        measured = beam_pass.split_outputs(beam_pass.metrics_from_counts(counts, params.top_k))
        float_metrics = measured.pop(beam_pass.FLOAT_MODEL)
        trivial = measured.pop(beam_pass.TRAINING_MEAN, None)
        for name, m in measured.items():
            target = baseline_fig if name == beam_pass.BASELINE else figures[name]
            target.update(m)
            for output, o in contracts.figures_by_output(m, spec.output_name).items():
                if o["non_finite_outputs"]:
                    target["error"] = (f"non-finite outputs on {o['non_finite_outputs']} example(s)"
                                       + (f" of output {output!r}" if len(spec.output_names) > 1 else ""))
        compare_secondary_outputs(figures, counts, spec, params)
        float_value = float_metrics.get(metric) if metric else None
        sign = 1 if not metric or metrics.higher_is_better(metric) else -1  # degradation = sign * (float - variant)
        for fig in figures.values():
            if is_finite(fig.get(metric)) and is_finite(float_value):
                fig["accuracy_drop"] = sign * (float_value - fig[metric])
                fig["relative_drop"] = fig["accuracy_drop"] / float_value if float_value else math.nan
        if metric:
            for name in list(figures) + ([beam_pass.BASELINE] if baseline_fig else []):
                fig = baseline_fig if name == beam_pass.BASELINE else figures[name]
                for key, reference in (("vs_float", beam_pass.FLOAT_MODEL), ("vs_deployed", beam_pass.BASELINE)):
                    compared = metrics.comparison(metric, counts.get(name, {}), reference, 2 * params.confidence - 1)
                    if compared and reference != name:
                        fig[key] = compared
        baseline_value = None
        if baseline_fig and "error" not in baseline_fig and metric:
            baseline_value = baseline_fig.get(metric)
        chance = gate.sanity_reference(metric, float_metrics.get("class_total"), params.top_k, trivial) if metric \
            else None
        verdicts = gate.judge(figures, float_value, params, baseline_value, chance, label_free=metric is None)
        device_checks(tflite, figures, files, spec, params)
        targets = gate.judge_targets(figures, verdicts, params)
        if targets:  # the first target is the primary one: the blessing and the main registry follow it
            primary = targets[params.targets[0].name]
            selected, selection = primary["selected"], dict(primary["selection"], target=params.targets[0].name)
        else:
            selected, selection = gate.select(figures, verdicts, params)
        warnings = list(manifest.warnings)  # training's and the quantizer's (QAT or a requested variant failed)
        warnings += [w for w in (gate.resolution_warning(labels["n"], float_value, params),
                                 gate.float_not_learned(float_value, chance, params) if metric else None, no_mean) if w]
        cpu = host.cpu_info()
        slow_int8 = latency_warning(figures, params, cpu)
        if slow_int8:
            warnings.append(slow_int8)
        shift = deployed_shift(baseline_fig, baseline_info, params)
        if shift and shift["flagged"]:
            warnings.append(shift["message"])
        if spec.task == metrics.REGRESSION and selected in tflite:
            figures[selected]["sample"] = regression_sample(files, float_model_dir, tflite[selected], spec, warnings)
        selective = manifest.variants.get(contracts.SELECTIVE_INTEGER)
        search = selective.selective if selective else None
        evaluation = Evaluation.model_validate(_jsonable({
            "blessed": selected is not None,
            "selected_variant": selected,
            "selection": selection,
            "metric": metric or LABEL_FREE_METRIC,
            "task": spec.task,
            "output": spec.output_name,
            "outputs": {o.output_name: o.task for o in spec.output_specs()},
            "float_model": float_metrics,
            "majority_class_rate": chance,
            "trivial_predictor": dict(trivial, prediction=training_mean) if trivial else None,
            "variants": figures,
            "verdicts": verdicts,
            "targets": targets,
            "warnings": warnings,
            "deployed_shift": shift,
            "baseline": dict(baseline_fig or {}, **(baseline_info or {})) if baseline_tflite else None,
            "history": list(history or []),
            "settings": params.model_dump(),
            "host": {"note": "latency is measured on this host's CPU with XNNPACK, not on a device",
                     "tensorflow_version": tf.__version__, "cpu_count": os.cpu_count(), "cpu": cpu,
                     "cpu_description": host.describe(cpu)},
            "num_eval_examples": labels["n"],
            "manifest": {n: e.model_dump(include=set(VariantBuild.model_fields)) for n, e in manifest.variants.items()},
            # The accuracy-aware search's per-layer errors and steps, for the report.
            "selective": search.model_dump(exclude_unset=True) if search else None,
            "activation_ranges": (manifest.activation_ranges.model_dump(exclude_unset=True)
                                  if manifest.activation_ranges else None),
            "activation_ranges_int16": (manifest.activation_ranges_int16.model_dump(exclude_unset=True)
                                        if manifest.activation_ranges_int16 else None),
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        }))
        contracts.write_evaluation(staging, evaluation)
        contracts.write_decision(staging, decision(evaluation))
        report.write_report(str(staging), evaluation)
    log.info("Gate: %s", {n: v["passed"] for n, v in verdicts.items()})
    log.info("Selected variant: %s (%s)", selected, selection["why"])
    for warning in warnings:
        log.warning("TFLiteEvaluator: %s", warning)
    return evaluation


LABEL_FREE_METRIC = "sqnr_db"  # what a label-free evaluation records as its headline figure


def compare_secondary_outputs(figures: Dict[str, dict], counts: Dict[str, dict], spec: ModelSpec,
                              params: GateSettings) -> None:
    """For each labelled secondary output of a multi-output model: its task's default
    metric (the task table) and that metric's paired comparison with the float model
    (metrics.comparison: the interval method of the metric), recorded in
    figures[variant]['outputs'][output] as `metric` and `vs_float`. Shown, not gated: the
    gate judges the primary output."""
    for o in spec.output_specs()[1:]:
        metric = metrics.TASKS[o.task].default_metric
        for name, fig in figures.items():
            out = fig.get("outputs", {}).get(o.output_name)
            if out is None:
                continue
            out["metric"] = metric
            key = beam_pass.output_key(name, o.output_name, primary=False)
            compared = metrics.comparison(metric, counts.get(key, {}), beam_pass.FLOAT_MODEL,
                                          2 * params.confidence - 1) if metric else None
            if compared:
                out["vs_float"] = compared


def latency_warning(figures: Dict[str, dict], params: GateSettings, cpu: dict) -> Optional[str]:
    """A warning when latency decides (fastest, or a latency budget) on a host whose int8
    kernels run slower than float: such figures say little about a device that has int8
    dot-product instructions."""
    uses_latency = params.selection == gate.FASTEST or params.max_latency_ms is not None or any(
        t.max_latency_ms is not None or t.selection == gate.FASTEST for t in params.targets)
    reference = figures.get(contracts.FLOAT32, {}).get("latency_ms_median")
    integer = {n: f["latency_ms_median"] for n, f in figures.items()
               if f.get("integer_compute_fraction") == 1.0 and is_finite(f.get("latency_ms_median"))}
    if not uses_latency or not is_finite(reference) or not integer:
        return None
    fastest = min(integer, key=integer.get)
    if integer[fastest] <= reference:
        return None
    return (f"latency decides here (selection or a latency budget), but on this host ({host.describe(cpu)}) the "
            f"fastest integer variant, {fastest}, takes {integer[fastest]:.4f} ms against float32's {reference:.4f} ms: "
            "int8 kernels are slower than float on this CPU, so these latencies say little about a device with int8 "
            "dot-product instructions; measure on the target hardware before relying on them")


def deployed_shift(baseline_fig: Optional[dict], baseline_info: Optional[dict], params: GateSettings) -> Optional[dict]:
    """The deployed model's metric on this run's eval data against the figure its own
    manifest recorded when it was pushed; flagged when it fell by more than max_deployed_shift."""
    if not baseline_fig or "error" in baseline_fig or not baseline_info:
        return None
    if not params.metric or not metrics.higher_is_better(params.metric):
        return None  # max_deployed_shift is a rate (pp): an error metric's unit is the label's
    recorded = (baseline_info.get("recorded_metrics") or {}).get(params.metric)
    now = baseline_fig.get(params.metric)
    if not (is_finite(recorded) and is_finite(now)):
        return None
    fall = gate.better(params, recorded) - gate.better(params, now)
    flagged = params.max_deployed_shift is not None and fall > params.max_deployed_shift + gate.TOLERANCE
    message = (f"shift: the deployed version {baseline_info.get('version')} scores {params.metric} {now:.4f} on this "
               f"run's eval data, {100 * fall:.2f} pp below the {recorded:.4f} its manifest recorded at push time "
               f"(max_deployed_shift {100 * (params.max_deployed_shift or 0):g} pp): the data or labels have changed")
    return {"version": baseline_info.get("version"), "recorded": recorded, "now": now, "fall": fall,
            "flagged": flagged, "message": message if flagged else ""}


def decision(evaluation: Evaluation) -> Decision:
    """outcome.json: the decision for automation (blessed, why, warnings, shift)."""
    selected, figures = evaluation.selected_variant, evaluation.selected_figures()
    primary = evaluation.targets.get(evaluation.selection.target or "")
    # Nothing selected for the primary target: its reason (the budget that decided) first,
    # then each variant's verdict for that target, not the gate's alone.
    why = ([f"{selected}: {evaluation.selection.why}"] if selected else
           [evaluation.selection.why] + [f"{n}: {'; '.join(v.reasons)}" for n, v in primary.verdicts.items()]
           if primary else [f"{n}: {'; '.join(v.reasons)}" for n, v in evaluation.verdicts.items()])
    return Decision(
        blessed=evaluation.blessed, selected_variant=selected, why=why, warnings=evaluation.warnings,
        skipped={n: e.reason for n, e in evaluation.manifest.items() if e.status == contracts.SKIPPED},
        deployed_shift=evaluation.deployed_shift, metric=evaluation.metric, output=evaluation.output,
        targets={name: t.selected for name, t in evaluation.targets.items()},
        selected_metrics={k: figures.get(k) for k in (evaluation.metric, "accuracy_drop", "vs_float", "size_bytes",
                                                      "latency_ms_median")} if figures else None,
        created_at=evaluation.created_at)


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

