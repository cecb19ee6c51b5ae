"""metrics.json -> report.html with embedded PNG plots (also written beside it)."""
from __future__ import annotations

import base64
import html
import io
import os
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from components.contracts import REPORT_FILE  # noqa: E402


def _evaluated(result) -> Dict[str, dict]:
    return {n: f for n, f in result["variants"].items() if isinstance(f.get(result["metric"]), (int, float))}


def _save(fig, out_dir: str, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(buf.getvalue())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _colour(result, name):
    if name == result["selected_variant"]:
        return "tab:green"
    return "tab:blue" if result["verdicts"][name]["passed"] else "tab:red"


def plots(result, out_dir: str) -> Dict[str, str]:
    ev = _evaluated(result)
    metric = result["metric"]
    names = list(ev)
    out = {}

    fig, ax = plt.subplots(figsize=(6.5, 4))
    placed = []
    for n in names:
        point = (ev[n]["size_bytes"] / 1024, ev[n][metric])
        ax.scatter(*point, color=_colour(result, n), s=50)
        # Stack the labels of points that (nearly) coincide instead of overprinting them.
        stacked = sum(1 for p in placed if abs(p[0] - point[0]) < 3 and abs(p[1] - point[1]) < 1e-3)
        placed.append(point)
        ax.annotate(n, point, textcoords="offset points", xytext=(6, 4 - 11 * stacked), fontsize=8)
    ax.axhline(result["float_model"][metric], color="grey", ls="--", lw=1, label="float model")
    ax.set_xlabel("model size (KiB)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs size (green: selected, red: failed the gate)")
    ax.legend(loc="lower right", fontsize=8)
    out["accuracy_vs_size.png"] = _save(fig, out_dir, "accuracy_vs_size.png")

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    med = [ev[n]["latency_ms_median"] for n in names]
    p90 = [ev[n]["latency_ms_p90"] for n in names]
    ax.bar(names, med, color=[_colour(result, n) for n in names], label="median")
    ax.scatter(names, p90, color="black", marker="_", s=300, label="p90")
    ax.set_ylabel("ms per example (host CPU, XNNPACK)")
    ax.set_title(f"single-example latency, {result['settings']['num_threads']} thread(s)")
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    out["latency.png"] = _save(fig, out_dir, "latency.png")

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    drops = [100 * ev[n].get("accuracy_drop", 0.0) for n in names]
    ax.bar(names, drops, color=[_colour(result, n) for n in names])
    limit = result["settings"].get("max_accuracy_drop")
    if limit is not None:
        ax.axhline(100 * limit, color="red", ls="--", lw=1, label=f"max_accuracy_drop {100 * limit:g} pp")
        ax.legend(fontsize=8)
    ax.set_ylabel(f"{metric} drop vs float (pp)")
    ax.set_title("accuracy drop against the float model")
    ax.tick_params(axis="x", rotation=30)
    out["accuracy_drop.png"] = _save(fig, out_dir, "accuracy_drop.png")
    return out


def selective_section(result, out_dir: str) -> str:
    """Per-layer error table and accuracy vs number of float layers, when the search ran."""
    record = result.get("selective")
    if not record:
        return ""
    steps = sorted(record["steps"], key=lambda s: s["num_float_layers"])
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot([s["num_float_layers"] for s in steps], [s["validation_accuracy"] for s in steps], "o-", color="tab:blue",
            label="selective_integer (validation)")
    ref = record["float_accuracy_on_validation"]
    ax.axhline(ref, color="grey", ls="--", lw=1, label="float model (validation)")
    ax.axhline(ref - record["budget"]["max_drop"], color="red", ls="--", lw=1, label="allowed drop")
    ax.set_xlabel("layers kept float")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy-aware search: accuracy vs float layers")
    ax.legend(fontsize=8)
    image = _save(fig, out_dir, "selective_search.png")
    chosen = set(record.get("float_layers") or [])
    rows = "".join(
        f"<tr{' class=selected' if r['tensor_name'] in chosen else ''}><td>{i}</td><td>{html.escape(r['op_name'])}</td>"
        f"<td>{html.escape(r['tensor_name'][:90])}</td><td>{_fmt(r['rmse_over_scale'], '{:.4g}')}</td>"
        f"<td>{_fmt(r['mean_squared_error'], '{:.4g}')}</td><td>{_fmt(r['scale'], '{:.4g}')}</td></tr>"
        for i, r in enumerate(record["layer_errors"][:20], 1)
    )
    outcome = (f"kept {len(chosen)} layer(s) float (highlighted)" if record.get("float_layers") is not None
               else "no model passed within the budget")
    return f"""<h2>Selective integer quantization</h2>
<p>Layers ranked by quantization error (RMSE / scale) from the QuantizationDebugger; the search
{outcome}, measured on {record['num_validation_examples']} validation examples (not the eval split).</p>
<table><tr><th>rank</th><th>op</th><th>tensor</th><th>RMSE/scale</th><th>MSE</th><th>scale</th></tr>{rows}</table>
<figure><img alt="selective_search.png" src="data:image/png;base64,{image}"></figure>"""


def _fmt(x, spec="{:.4f}") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return spec.format(x)
    return html.escape(str(x))


def write_report(out_dir: str, result: dict) -> str:
    images = plots(result, out_dir) if _evaluated(result) else {}
    metric = result["metric"]
    rows: List[str] = []
    for name, fig in result["variants"].items():
        verdict = result["verdicts"][name]
        cls = "selected" if name == result["selected_variant"] else ("pass" if verdict["passed"] else "fail")
        rows.append(
            f"<tr class='{cls}'><td>{html.escape(name)}</td><td>{_fmt(fig.get(metric))}</td>"
            f"<td>{_fmt(100 * fig['accuracy_drop'], '{:+.2f}') if 'accuracy_drop' in fig else '–'}</td>"
            f"<td>{_fmt(fig.get('agreement_with_float'))}</td><td>{_fmt(fig.get('size_bytes'))}</td>"
            f"<td>{_fmt(fig.get('latency_ms_median'), '{:.4f}')}</td><td>{_fmt(fig.get('latency_ms_p90'), '{:.4f}')}</td>"
            f"<td>{'pass' if verdict['passed'] else 'fail'}</td>"
            f"<td>{'<br>'.join(html.escape(r) for r in verdict['reasons'])}</td></tr>"
        )
    selected = result["selected_variant"]
    headline = (
        f"Selected <b>{html.escape(selected)}</b>: blessed for push."
        if selected else "No variant passed the gate: <b>not blessed</b>, nothing will be pushed."
    )
    thresholds = "".join(
        f"<li>{html.escape(k)}: {_fmt(v, '{:g}')}</li>" for k, v in result["settings"].items() if v is not None
    )
    baseline = ""
    if result.get("baseline"):
        b = result["baseline"]
        baseline = (f"<p>Deployed baseline ({html.escape(str(b.get('version', '')))}): "
                    f"{metric} {_fmt(b.get(metric))} on the same eval examples.</p>")
    figs = "".join(f"<figure><img alt='{n}' src='data:image/png;base64,{b64}'></figure>" for n, b64 in images.items())
    fm = result["float_model"]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>TFLite evaluation report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: right; vertical-align: top; }}
td:first-child, td:last-child, th:first-child, th:last-child {{ text-align: left; }}
tr.selected {{ background: #d9f2d9; font-weight: bold; }} tr.fail {{ background: #fbe3e3; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 32em; }}
.note {{ color: #666; font-size: 0.85em; }}
</style></head><body>
<h1>TFLite evaluation report</h1>
<p>{headline}</p>
<p>Float model {metric}: {_fmt(fm[metric])} on {result['num_eval_examples']} eval examples
(top-{fm['top_k']}: {_fmt(fm['top_k_accuracy'])}).</p>
{baseline}
<h2>Variants</h2>
<table><tr><th>variant</th><th>{metric}</th><th>drop (pp)</th><th>agreement with float</th><th>bytes</th>
<th>latency median (ms)</th><th>p90 (ms)</th><th>gate</th><th>reasons</th></tr>
{''.join(rows)}</table>
<p class="note">Latency: single example, host CPU with XNNPACK, {result['settings']['num_threads']} thread(s),
{result['settings']['latency_runs']} runs after warm-up. Host figures, not device figures.</p>
<h2>Gate</h2><ul>{thresholds}</ul>
<h2>Plots</h2>{figs}
{selective_section(result, out_dir)}
<p class="note">Generated {html.escape(result['created_at'])} with TensorFlow {html.escape(result['host']['tensorflow_version'])}.</p>
</body></html>
"""
    path = os.path.join(out_dir, REPORT_FILE)
    with open(path, "w") as f:
        f.write(page)
    return path
