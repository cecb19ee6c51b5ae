"""The evaluation (metrics.json's record) -> report.html (a jinja2 template, plots embedded)
plus the PNGs beside it.

The plots are matplotlib figures built from the result; the page is
templates/report.html.j2, rendered with autoescaping, so no HTML is built from strings.
"""
from __future__ import annotations

import base64
import io
import os
from typing import Dict, List, Optional

import jinja2
import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tfx_quantization.contracts import REPORT_FILE, Evaluation  # noqa: E402
from tfx_quantization.quantization import metrics  # noqa: E402
from tfx_quantization.quantization.stats import is_finite  # noqa: E402

SELECTED, PASSED, FAILED = "tab:green", "tab:blue", "tab:red"
_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("tfx_quantization.tflite_evaluator", "templates"),
    autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True,
)


PAIRED_WHAT = {  # what the paired interval is computed from, by method
    metrics.NEWCOMBE: "examples the float model gets right and the variant wrong, and the reverse",
    metrics.DELONG: "each example's rank among the other class's, for both models: DeLong's structural components",
    metrics.PAIRED_T: "each example's absolute error under the variant minus under the float model",
    metrics.DELTA_T: "each example's squared errors under both models",
    metrics.DELTA_F1: "each example's true positives, false positives and false negatives per label under both "
                      "models",
    metrics.POINT_ONLY: "none: the observed figures decide",
}


def task_view(result: Evaluation) -> dict:
    """How the report shows the gate's metric: its degradation's name, unit and scale (a
    rate in pp, an error in the label's units), the interval method and the sanity reference."""
    row = metrics.METRICS.get(result.metric)
    rate = row is None or not row.unit
    higher = row is None or row.higher_is_better
    sanity = {"auc": "a random ranking's AUC", "mae": "the training mean's MAE", "rmse": "the training mean's RMSE",
              "micro_f1": "no sanity reference", "macro_f1": "no sanity reference"}.get(result.metric,
                                                                                        "majority-class rate")
    method = row.interval if row else metrics.POINT_ONLY
    return {"scale": 100 if rate else 1, "unit": "pp" if rate else row.unit, "method": method,
            "degradation": "drop" if higher else "increase", "paired_what": PAIRED_WHAT[method],
            "sanity_name": sanity}


def _evaluated(result: Evaluation) -> Dict[str, dict]:
    return {n: f for n, f in result.variants.items() if isinstance(f.get(result.metric), (int, float))}


def _save(fig, out_dir: str, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _status(result: Evaluation, name) -> str:
    if name == result.selected_variant:
        return "selected"
    return "pass" if result.verdicts[name].passed else "fail"


def pareto_front(points: Dict[str, tuple]) -> List[str]:
    """Names not dominated: no other point is at least as small (x) and as accurate (y),
    and strictly better in one. Sorted by x."""
    front = []
    for n, (x, y) in points.items():
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for m, (x2, y2) in points.items() if m != n):
            front.append(n)
    return sorted(front, key=lambda n: points[n])


def _trade_off(result, out_dir: str, key: str, scale: float, xlabel: str, name: str) -> str:
    """metric vs one cost with the Pareto front; every point drawn and labelled. The
    selected one is a large star drawn first, so that variants at the same point stay
    visible on top of it; labels of (nearly) coinciding points are stacked."""
    ev, metric = _evaluated(result), result.metric
    points = {n: (f[key] * scale, f[metric]) for n, f in ev.items() if isinstance(f.get(key), (int, float))}
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    row = metrics.METRICS.get(metric)
    sign = -1 if row and not row.higher_is_better else 1  # an error metric: lower is better
    front = pareto_front({n: (x, sign * y) for n, (x, y) in points.items()})
    if len(front) > 1:
        ax.step([points[n][0] for n in front], [points[n][1] for n in front], where="post", color="grey", lw=1,
                ls=":", label="Pareto front")
    order = sorted(points, key=lambda n: _status(result, n) != "selected")  # selected drawn first
    placed: List[tuple] = []
    xs = [p[0] for p in points.values()] or [1]
    ys = [p[1] for p in points.values()] or [1]
    dx, dy = (max(xs) - min(xs)) or 1, (max(ys) - min(ys)) or 0.01
    for n in order:
        x, y = points[n]
        status = _status(result, n)
        style = {"selected": dict(marker="*", s=520, color=SELECTED, edgecolor="black", zorder=2, alpha=0.85),
                 "pass": dict(marker="o", s=36, color=PASSED, edgecolor="white", zorder=3),
                 "fail": dict(marker="X", s=44, color=FAILED, edgecolor="white", zorder=3)}[status]
        ax.scatter(x, y, **style)
        # Stack the labels of points that (nearly) coincide instead of overprinting them.
        stacked = sum(1 for p in placed if abs(p[0] - x) < 0.04 * dx and abs(p[1] - y) < 0.04 * dy)
        placed.append((x, y))
        ax.annotate(n + (" (selected)" if status == "selected" else ""), (x, y), textcoords="offset points",
                    xytext=(8, 4 - 11 * stacked), fontsize=8, fontweight="bold" if status == "selected" else None)
    if isinstance(result.float_model.get(metric), (int, float)):
        ax.axhline(result.float_model[metric], color="grey", ls="--", lw=1, label="float model")
    ax.scatter([], [], marker="*", s=120, color=SELECTED, edgecolor="black", label="selected")
    ax.scatter([], [], marker="o", color=PASSED, label="passed the gate")
    ax.scatter([], [], marker="X", color=FAILED, label="failed the gate")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {xlabel.split(' (')[0]}")
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, out_dir, name)


def _intervals(result, out_dir: str) -> Optional[str]:
    ev = {n: f for n, f in _evaluated(result).items() if f.get("vs_float")}
    if not ev:
        return None
    names = list(ev)
    view = task_view(result)
    scale, unit = view["scale"], view["unit"]
    fig, ax = plt.subplots(figsize=(6.8, 0.45 * len(names) + 1.5))
    for i, n in enumerate(names):
        c = ev[n]["vs_float"]
        colour = {"selected": SELECTED, "pass": PASSED, "fail": FAILED}[_status(result, n)]
        ax.plot([scale * c["low"], scale * c["high"]], [i, i], color=colour, lw=3)
        ax.scatter(scale * c["drop"], i, color="black", zorder=3, s=18)
    limit = result.settings.get("max_accuracy_drop")
    if limit is not None:
        ax.axvline(scale * limit, color=FAILED, ls="--", lw=1, label=f"max_accuracy_drop {scale * limit:g} {unit}")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    confidence = next(iter(ev.values()))["vs_float"]["confidence"]
    ax.set_xlabel(f"{result.metric} {view['degradation']} vs float ({unit}): observed (dot) and "
                  f"{100 * confidence:.0f}% paired interval")
    ax.set_title(f"paired {view['degradation']}s, {view['method']} ({result.settings['drop_decision']} decides)")
    if limit is not None:  # the bound's line is the one labelled artist
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out_dir, "paired_intervals.png")


def _judged(result, output: str = "") -> Dict[str, dict]:
    """Variants with a verdict and fidelity figures of `output` ('' : the primary one), in
    the record's order."""
    shown = {n: result.by_output(f).get(output or result.output, {}) for n, f in result.variants.items()
             if n in result.verdicts}
    return {n: f for n, f in shown.items() if isinstance(f.get("sqnr_db"), (int, float)) or f.get("output_identical")}


def _fidelity(result, out_dir: str, output: str = "") -> Optional[str]:
    """SQNR of one output (''/the primary: the judged one; fidelity.png) against the float
    model's, one bar per variant, coloured by the gate's verdict, with the min_sqnr_db floor
    (the primary output's); cosine similarity written on each bar. Any task: a label-free
    model is gated by these alone. A multi-output model's other outputs: one plot each
    (fidelity_<output>.png). Identical outputs (infinite SQNR) are named in the title
    instead of drawn."""
    primary = not output or output == result.output
    shown = _judged(result, output)
    finite = {n: f for n, f in shown.items() if is_finite(f.get("sqnr_db"))}
    if not finite:
        return None
    names = list(finite)
    fig, ax = plt.subplots(figsize=(6.8, 0.42 * len(names) + 1.6))
    colours = [{"selected": SELECTED, "pass": PASSED, "fail": FAILED}[_status(result, n)] for n in names]
    ax.barh(names, [finite[n]["sqnr_db"] for n in names], color=colours)
    for i, n in enumerate(names):
        cosine = finite[n].get("cosine_similarity")
        if isinstance(cosine, (int, float)):
            ax.annotate(f"cos {cosine:.4f}", (finite[n]["sqnr_db"], i), textcoords="offset points", xytext=(4, -3),
                        fontsize=7)
    floor = result.settings.get("min_sqnr_db") if primary else None
    if floor is not None:
        ax.axvline(floor, color=FAILED, ls="--", lw=1, label=f"min_sqnr_db {floor:g} dB")
        ax.legend(fontsize=7, loc="lower right")
    ax.invert_yaxis()
    ax.set_xlabel("SQNR vs the float model's output (dB): 10 log10(signal power / error power)")
    identical = [n for n, f in shown.items() if n not in finite]
    title = "fidelity to the float model" + ("" if len(result.outputs) < 2 else
                                             f", output {output or result.output}" + ("" if primary else " (not gated)"))
    ax.set_title(title + (f" (identical outputs: {', '.join(identical)})" if identical else ""))
    return _save(fig, out_dir, "fidelity.png" if primary else f"fidelity_{output}.png")


def output_rows(result) -> List[dict]:
    """A multi-output model's figures per output per variant (the float model first): the
    output's task metric and fidelity to the float model (SQNR, cosine, mean and max
    absolute error, top-1 agreement for classifiers). Empty for a one-output model."""
    if len(result.outputs) < 2:
        return []
    rows = []
    for name, figures in [("float model", result.float_model)] + list(result.variants.items()):
        for output, f in result.by_output(figures).items():
            metric = result.metric if output == result.output else f.get("metric")
            rows.append({"name": name, "output": output, "task": result.outputs.get(output, ""),
                         "primary": output == result.output, "metric": metric,
                         "value": f.get(metric) if metric else None, "vs_float": f.get("vs_float"),
                         **{k: f.get(k) for k in metrics.FIDELITY + ("agreement_with_float", "output_identical")}})
    return rows


def _roc(result, out_dir: str) -> Optional[str]:
    """ROC curves (binary) of the float model and the selected variant (no variant selected:
    every judged one), from the evaluator's fixed logit histograms (metrics.roc_from_histogram)."""
    curves = {"float model": result.float_model.get("roc")}
    chosen = [result.selected_variant] if result.selected_variant else list(result.verdicts)
    curves.update({n: result.variants.get(n, {}).get("roc") for n in chosen})
    curves = {n: c for n, c in curves.items() if c and c.get("fpr")}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    for n, c in curves.items():
        auc = (result.float_model if n == "float model" else result.variants[n]).get("auc")
        style = dict(color="grey", ls="--") if n == "float model" else dict(
            color={"selected": SELECTED, "pass": PASSED, "fail": FAILED}[_status(result, n)])
        ax.plot(c["fpr"], c["tpr"], lw=1.5, label=f"{n} (AUC {auc:.4f})", **style)
    ax.plot([0, 1], [0, 1], color="lightgrey", lw=0.8, label="random ranking (AUC 0.5)")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC on the eval split")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, out_dir, "roc.png")


def _regression(result, out_dir: str) -> Optional[str]:
    """Regression: the selected variant's predictions against the float model's (the y = x
    line is perfect fidelity) and the histogram of the per-example change in absolute error
    (variant minus float: right of 0 is worse), on the evaluator's bounded sample of the
    first eval examples (evaluate.regression_sample)."""
    selected = result.selected_variant
    sample = result.variants.get(selected, {}).get("sample") if selected else None
    if not sample or not sample.get("float"):
        return None
    y, ref, var = (np.asarray(sample[k], np.float64) for k in ("label", "float", "variant"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 4.2))
    left.scatter(ref, var, s=8, color=SELECTED, alpha=0.6)
    low, high = float(min(ref.min(), var.min())), float(max(ref.max(), var.max()))
    left.plot([low, high], [low, high], color="grey", ls="--", lw=1, label="y = x (the float model's output)")
    left.set_xlabel("float model prediction")
    left.set_ylabel(f"{selected} prediction")
    left.set_title(f"predicted vs float ({len(ref)} eval values)")
    left.legend(fontsize=7, loc="upper left")
    change = np.abs(var - y) - np.abs(ref - y)
    right.hist(change, bins=40, color=SELECTED, alpha=0.8)
    right.axvline(0, color="grey", lw=1)
    right.axvline(float(change.mean()), color="black", ls="--", lw=1, label=f"mean {change.mean():+.3g}")
    right.set_xlabel(f"|{selected} - label| - |float - label| (label units)")
    right.set_ylabel("eval values")
    right.set_title("change in absolute error per example")
    right.legend(fontsize=7)
    return _save(fig, out_dir, "regression.png")


def _latency(result, out_dir: str) -> str:
    ev = _evaluated(result)
    names = list(ev)
    fig, ax = plt.subplots(figsize=(6.8, 3.5))
    colours = [{"selected": SELECTED, "pass": PASSED, "fail": FAILED}[_status(result, n)] for n in names]
    ax.bar(names, [ev[n]["latency_ms_median"] for n in names], color=colours, label="median")
    ax.scatter(names, [ev[n]["latency_ms_p90"] for n in names], color="black", marker="_", s=300, label="p90")
    ax.set_ylabel("ms per example (host CPU, XNNPACK)")
    ax.set_title(f"single-example latency, {result.settings['num_threads']} thread(s)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "latency.png")


def _per_class(result, out_dir: str) -> Optional[str]:
    rows = {"float model": result.float_model.get("per_class_accuracy")}
    rows.update({n: f.get("per_class_accuracy") for n, f in _evaluated(result).items()})
    rows = {n: r for n, r in rows.items() if r}
    if not rows:
        return None
    grid = np.array([[np.nan if v is None else v for v in r] for r in rows.values()], dtype=float)
    fig, ax = plt.subplots(figsize=(min(14, 1.5 + 0.55 * grid.shape[1]), 0.42 * len(rows) + 1.4))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=max(0.0, np.nanmin(grid) - 0.02) if np.isfinite(grid).any() else 0,
                      vmax=1.0, aspect="auto")
    if grid.shape[1] <= 20:
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xlabel("class")
    ax.set_title(f"per-class accuracy ({result.metric if result.metric == 'accuracy' else 'top-1'})")
    fig.colorbar(image, ax=ax, fraction=0.03)
    return _save(fig, out_dir, "per_class_accuracy.png")


def _confusion(result, out_dir: str) -> Optional[str]:
    selected = result.selected_variant
    shown = {"float model": result.float_model.get("confusion")}
    if selected:
        shown[selected] = result.variants[selected].get("confusion")
    shown = {n: np.array(m, dtype=float) for n, m in shown.items() if m}
    if not shown:
        return None
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown), 4.2), squeeze=False)
    for ax, (n, m) in zip(axes[0], shown.items()):
        rates = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
        if m.shape[0] <= 12:
            for (i, j), v in np.ndenumerate(m):
                if v:
                    ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
        ax.set_title(n)
        ax.set_xlabel("predicted")
        ax.set_ylabel("label")
    fig.suptitle("confusion matrices (counts; colour: share of the label's examples)")
    return _save(fig, out_dir, "confusion.png")


def _history(result, out_dir: str) -> Optional[str]:
    rows = [r for r in result.history if isinstance(r.get("accuracy"), (int, float))]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.8, 3.2))
    ax.plot([r["version"] for r in rows], [r["accuracy"] for r in rows], "o-", color=PASSED,
            label="pushed versions (at push time)")
    selected = result.selected_variant
    if selected and result.metric == "accuracy":
        ax.scatter(rows[-1]["version"] + 1, result.variants[selected]["accuracy"], marker="*", s=200,
                   color=SELECTED, edgecolor="black", zorder=5, label=f"this candidate ({selected})")
    ax.set_xlabel("registry version")
    ax.set_ylabel("accuracy")
    ax.set_title("history of pushed versions")
    ax.legend(fontsize=7)
    return _save(fig, out_dir, "history.png")


def _selective(result, out_dir: str) -> Optional[dict]:
    """Per-layer errors and the search's steps, when the search ran."""
    record = result.selective
    if not record:
        return None
    steps = sorted(record.steps, key=lambda s: s.num_float_layers)
    fig, ax = plt.subplots(figsize=(6.8, 3.5))
    ax.plot([s.num_float_layers for s in steps], [s.validation_accuracy for s in steps], "o-",
            color=PASSED, label="selective_integer (validation)")
    for order, s in enumerate(record.steps, 1):
        ax.annotate(f"step {order}", (s.num_float_layers, s.validation_accuracy), textcoords="offset points",
                    xytext=(5, 5), fontsize=7)
    ref = record.float_accuracy_on_validation
    ax.axhline(ref, color="grey", ls="--", lw=1, label="float model (validation)")
    ax.axhline(ref - record.budget.max_drop, color=FAILED, ls="--", lw=1, label="allowed drop")
    ax.set_xlabel("layers kept float")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlim(-0.5, max(s.num_float_layers for s in steps) + 1.5)
    ax.set_ylabel("accuracy")
    ax.set_title(f"accuracy-aware search: {len(steps)} step(s)")
    ax.legend(fontsize=7)
    return {"record": record, "chosen": set(record.float_layers or []),
            "image": _save(fig, out_dir, "selective_search.png")}


def _comparison_rows(result) -> List[dict]:
    """The selected variant (or the best candidate) beside the deployed model, metric by metric."""
    baseline = result.baseline
    if not baseline or "error" in baseline:
        return []
    candidate = result.selected_variant or next(iter(_evaluated(result)), None)
    if not candidate:
        return []
    fig = result.variants[candidate]
    rows = []
    for key, label in (("accuracy", "accuracy"), ("top_k_accuracy", f"top-{fig.get('top_k', '')} accuracy"),
                       ("agreement_with_float", "agreement with float"), ("size_bytes", "bytes"),
                       ("latency_ms_median", "latency median (ms)"), ("latency_ms_p90", "latency p90 (ms)"),
                       ("integer_compute_fraction", "integer-compute fraction")):
        rows.append({"metric": label, "candidate": fig.get(key), "deployed": baseline.get(key),
                     "recorded": (baseline.get("recorded_metrics") or {}).get(key)})
    return [dict(r, name=candidate) for r in rows]


def fmt(x, spec: str = "{:.4f}") -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        return spec.format(x)
    return str(x)


def write_report(out_dir: str, result: Evaluation) -> str:
    """Writes report.html and the plots' PNGs into out_dir; the report's path."""
    images: Dict[str, Optional[str]] = {}
    if _evaluated(result):
        images = {
            "accuracy_vs_size": _trade_off(result, out_dir, "size_bytes", 1 / 1024, "model size (KiB)",
                                           "accuracy_vs_size.png"),
            "accuracy_vs_latency": _trade_off(result, out_dir, "latency_ms_median", 1.0,
                                              "median latency (ms, host CPU)", "accuracy_vs_latency.png"),
            "intervals": _intervals(result, out_dir),
            "latency": _latency(result, out_dir),
            "per_class": _per_class(result, out_dir),
            "confusion": _confusion(result, out_dir),
        }
    images["fidelity"] = _fidelity(result, out_dir)
    images["fidelity_outputs"] = {o: _fidelity(result, out_dir, o) for o in result.outputs if o != result.output}
    images["roc"] = _roc(result, out_dir)
    images["regression"] = _regression(result, out_dir)
    images["history"] = _history(result, out_dir)
    page = _ENV.get_template("report.html.j2").render(
        r=result, images=images, fmt=fmt, status=lambda n: _status(result, n), selective=_selective(result, out_dir),
        task=task_view(result),
        deployed_rows=_comparison_rows(result), output_rows=output_rows(result),
        settings={k: v for k, v in result.settings.items() if v is not None},
    )
    path = os.path.join(out_dir, REPORT_FILE)
    with open(path, "w") as f:
        f.write(page)
    return path
