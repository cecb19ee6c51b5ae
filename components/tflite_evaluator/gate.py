"""The accuracy-drop gate and the selection policy: pure functions over metrics.

Semantics (all bounds inclusive; a bound left as None is not checked):
  absolute drop   = float_metric - variant_metric          passes when <= max_accuracy_drop
  relative drop   = absolute drop / float_metric            passes when <= max_relative_drop
  size            = size_bytes                              passes when <= max_model_bytes
  latency         = median single-example latency (ms)      passes when <= max_latency_ms
  minimum         = variant_metric                          passes when >= min_accuracy
  no regression   = baseline_metric - variant_metric, on the same eval data, must satisfy
                    the same drop bounds (absolute and/or relative to the baseline)
A variant passes when every configured bound holds. float32 is eligible only with
allow_float32. Missing or non-finite figures never pass. Accuracy comparisons allow
TOLERANCE (1e-9) for floating-point rounding, so a drop exactly at the bound passes.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

from components.contracts import FLOAT32
from components.quantization.stats import is_finite
from components.settings import FASTEST, SMALLEST, GateSettings  # noqa: F401  (SMALLEST, FASTEST: policy names)

TOLERANCE = 1e-9


def _drop_reasons(what: str, reference: float, value: float, cfg: GateSettings) -> List[str]:
    reasons = []
    drop = reference - value
    if cfg.max_accuracy_drop is not None and not drop <= cfg.max_accuracy_drop + TOLERANCE:
        reasons.append(f"{cfg.metric} drop vs {what} {drop:.4f} > max_accuracy_drop {cfg.max_accuracy_drop:.4f}")
    if cfg.max_relative_drop is not None:
        relative = drop / reference if reference > 0 else (0.0 if drop <= 0 else math.inf)
        if not relative <= cfg.max_relative_drop + TOLERANCE:
            reasons.append(
                f"relative {cfg.metric} drop vs {what} {relative:.4f} > max_relative_drop {cfg.max_relative_drop:.4f}"
            )
    return reasons


def judge(
    variants: Dict[str, dict],
    float_metric: Optional[float],
    cfg: GateSettings,
    baseline_metric: Optional[float] = None,
) -> Dict[str, dict]:
    """For each variant {name: figures}, {name: {'passed': bool, 'reasons': [...]}}.

    `figures` holds the metric under cfg.metric, 'size_bytes', 'latency_ms_median', and
    'error' when the variant could not be evaluated at all.
    """
    verdicts = {}
    for name, fig in variants.items():
        reasons: List[str] = []
        value = fig.get(cfg.metric)
        if fig.get("error"):
            reasons.append(fig["error"])
        elif not is_finite(value):
            reasons.append(f"{cfg.metric} is missing or not finite ({value})")
        elif not is_finite(float_metric):
            reasons.append(f"the float model's {cfg.metric} is missing or not finite ({float_metric})")
        else:
            reasons += _drop_reasons("float model", float_metric, value, cfg)
            if cfg.min_accuracy is not None and not value >= cfg.min_accuracy - TOLERANCE:
                reasons.append(f"{cfg.metric} {value:.4f} < min_accuracy {cfg.min_accuracy:.4f}")
            if baseline_metric is not None:
                if not is_finite(baseline_metric):
                    reasons.append(f"the baseline's {cfg.metric} is not finite ({baseline_metric})")
                else:
                    reasons += _drop_reasons("deployed baseline", baseline_metric, value, cfg)
            if cfg.max_model_bytes is not None:
                size = fig.get("size_bytes")
                if not is_finite(size) or not size <= cfg.max_model_bytes:
                    reasons.append(f"size {size} bytes > max_model_bytes {cfg.max_model_bytes}")
            if cfg.max_latency_ms is not None:
                latency = fig.get("latency_ms_median")
                if not is_finite(latency) or not latency <= cfg.max_latency_ms:
                    shown = f"{latency:.4g}" if is_finite(latency) else str(latency)
                    reasons.append(f"latency {shown} ms > max_latency_ms {cfg.max_latency_ms:g}")
        if name == FLOAT32 and not cfg.allow_float32:
            reasons.append("float32 is the unquantized baseline; set allow_float32 to make it eligible")
        verdicts[name] = {"passed": not reasons, "reasons": reasons or ["all bounds hold"]}
    return verdicts


def select(variants: Dict[str, dict], verdicts: Dict[str, dict], cfg: GateSettings) -> Optional[str]:
    """The passing variant chosen by cfg.selection, or None when none passes."""
    passing = [n for n, v in verdicts.items() if v["passed"]]
    if not passing:
        return None
    if isinstance(cfg.selection, list):
        return next((n for n in cfg.selection if n in passing), None)
    inf = math.inf
    if cfg.selection == SMALLEST:
        key = lambda n: (variants[n].get("size_bytes", inf), variants[n].get("latency_ms_median", inf), n)  # noqa: E731
    else:
        key = lambda n: (variants[n].get("latency_ms_median", inf), variants[n].get("size_bytes", inf), n)  # noqa: E731
    return min(passing, key=key)
