"""The degradation gate and the selection policy: pure functions over figures.

The gate judges one metric of the contract's output (settings.metric, else its task's
default: quantization/metrics.py's task table), whatever the task; the evaluator computes
every figure and interval, the gate only compares them with the bounds.

Semantics (all bounds inclusive; a bound left as None is not checked):
  drop            = the metric's degradation against a reference on the same eval examples:
                    reference - variant where higher is better (accuracy, AUC, F1),
                    variant - reference for errors (MAE, RMSE); a paired comparison with a
                    two-sided (2 * confidence - 1) interval [low, high] by the metric's
                    method (accuracy: Newcombe's paired interval, quantization/stats.py;
                    AUC: DeLong's; MAE: the paired t interval; RMSE: the delta method;
                    F1: the delta method on ratios of per-example counts)
  decisive drop   = high (drop_decision upper_bound, the default: pass only when the
                    data show the drop is within the bound), low (lower_bound: fail only
                    when the data show it exceeds the bound) or the observed drop (point)
  absolute        = decisive drop                          passes when <= max_accuracy_drop
  relative        = decisive drop / reference metric       passes when <= max_relative_drop
  reference       = the float model, and the deployed model when there is one
  sanity          = the float model and the variant must beat the task's trivial predictor:
                    the majority-class rate of the eval labels (top-k: the k largest
                    classes) + min_margin_over_majority, AUC 0.5 + the margin, or for an
                    error metric the training mean's error * (1 - the margin); when the
                    float model does not, nothing passes
  fidelity        = sqnr_db >= min_sqnr_db and cosine_similarity >= min_cosine_similarity
                    (against the float model's outputs; identical outputs pass). A model
                    without labels (task none) is judged by these, size and latency alone
  size            = size_bytes                             passes when <= max_model_bytes
  latency         = median single-example latency (ms)     passes when <= max_latency_ms
  minimum         = variant_metric                         passes when >= min_accuracy
                    (metrics where higher is better)
float32 is eligible only with allow_float32; so is a mixed variant (selective_integer)
whose integer-compute fraction is below min_integer_compute_fraction, since it is mostly float.
Missing or non-finite figures never pass. Comparisons allow TOLERANCE (1e-9) for
floating-point rounding, so a drop exactly at the bound passes.

Deployment targets (settings.targets): a variant ships to a target when it passed the gate
and the target's checks hold: it runs on the target's runtime (TFLite Micro: allocates and
runs, within max_arena_bytes), integer_only (integer-compute fraction 1), integer_io (int8/uint8
input and output), and the target's size and latency budgets. Each target selects on its own.

Selection among the passing variants, as a deployer would make it: smallest (sizes within
size_tie_tolerance of the smallest file are tied) or fastest (latency medians within the
measurement's noise are tied: within latency_tie_tolerance of the fastest median or within
the larger IQR of the two); tied variants are ranked by integer-compute fraction (an
integer model runs on integer hardware and TFLite Micro, a dynamic-range one computes in
float), then by the gate's metric (its better direction), where differences within max_accuracy_drop are ties too
(the gate's own measure of "no loss": a variant a few examples better does not buy a larger
file), then by size, then latency, then name. Or a list of names in order of preference.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Tuple

from tfx_quantization.contracts import FLOAT32, MIXED_VARIANTS
from tfx_quantization.quantization import metrics, stats
from tfx_quantization.quantization.stats import is_finite
from tfx_quantization.settings import FASTEST, LOWER_BOUND, POINT, SMALLEST, DeploymentTarget, GateSettings  # noqa: F401

TOLERANCE = 1e-9
FLOAT_REFERENCE, DEPLOYED_REFERENCE = "float model", "deployed model"
TFLM = "tflm"
DEFAULT_METRIC = "accuracy"  # settings.metric None without a task resolving it (multiclass)


def gate_metric(cfg: GateSettings) -> str:
    """The metric the gate judges: cfg.metric, which the evaluator resolves from the task."""
    return cfg.metric or DEFAULT_METRIC


def better(cfg: GateSettings, value: float) -> float:
    """`value` of the gate's metric signed so that larger is better (errors negated)."""
    return value if metrics.higher_is_better(gate_metric(cfg)) else -value


def chance_rate(class_total: List[int], metric: str, top_k: int) -> Optional[float]:
    """The metric a model that always answers the most frequent class(es) would score."""
    n = sum(class_total)
    if not n:
        return None
    k = top_k if metric == "top_k_accuracy" else 1
    return sum(sorted(class_total, reverse=True)[:k]) / n


def sanity_reference(metric: str, class_total: Optional[List[int]], top_k: int,
                     trivial: Optional[dict] = None) -> Optional[float]:
    """The figure the task's trivial predictor scores in `metric` (metrics.TASKS' sanity):
    the majority-class rate (accuracy, top-k), 0.5 (AUC: a random ranking), the training
    mean's error (`trivial`: its figures, MAE or RMSE); None when there is none (F1)."""
    if metric == "auc":
        return 0.5
    if metric in ("accuracy", "top_k_accuracy"):
        return chance_rate(class_total or [], metric, top_k)
    value = (trivial or {}).get(metric)
    return value if is_finite(value) else None


def comparison(table: Optional[List[int]], cfg: GateSettings) -> Optional[dict]:  # accuracy's 2x2 table
    """The paired drop against a reference from its 2x2 table, as recorded in metrics.json."""
    if not table or not sum(table):
        return None
    return stats.paired_drop(table, 2 * cfg.confidence - 1).to_dict()


def decisive(drop: dict, cfg: GateSettings) -> float:
    return {POINT: drop["drop"], LOWER_BOUND: drop["low"]}.get(cfg.drop_decision, drop["high"])


def _describe(drop: dict, cfg: GateSettings) -> str:
    interval = f"{100 * drop['confidence']:.0f}% interval [{drop['low']:+.4f}, {drop['high']:+.4f}]"
    return f"{drop['drop']:+.4f} ({interval}; {cfg.drop_decision} {decisive(drop, cfg):+.4f})"


def _drop_reasons(what: str, reference: float, drop: Optional[dict], cfg: GateSettings) -> List[str]:
    if drop is None:
        return [f"no paired counts against the {what}: the drop cannot be judged"]
    reasons = []
    value = decisive(drop, cfg)
    metric = gate_metric(cfg)
    word = "drop" if metrics.higher_is_better(metric) else "increase"
    if not is_finite(value):
        return [f"{metric} {word} vs {what}: its {cfg.drop_decision} is not finite ({value})"]
    if cfg.max_accuracy_drop is not None and not value <= cfg.max_accuracy_drop + TOLERANCE:
        reasons.append(f"{metric} {word} vs {what} {_describe(drop, cfg)} > max_accuracy_drop "
                       f"{cfg.max_accuracy_drop:.4f}")
    if cfg.max_relative_drop is not None:
        relative = value / reference if reference > 0 else (0.0 if value <= 0 else math.inf)
        if not relative <= cfg.max_relative_drop + TOLERANCE:
            reasons.append(f"relative {metric} {word} vs {what} {relative:.4f} ({word} {_describe(drop, cfg)} / "
                           f"{reference:.4f}) > max_relative_drop {cfg.max_relative_drop:.4f}")
    return reasons


def majority_floor(chance: Optional[float], cfg: GateSettings) -> Optional[float]:
    """The sanity bound on the gate's metric: the trivial predictor's figure `chance` plus
    the margin (an error metric: times 1 - the margin); None when off or unknown."""
    if cfg.min_margin_over_majority is None or chance is None:
        return None
    if metrics.higher_is_better(gate_metric(cfg)):
        return chance + cfg.min_margin_over_majority
    return chance * (1 - cfg.min_margin_over_majority)


def _sanity_name(cfg: GateSettings) -> str:
    metric = gate_metric(cfg)
    return {"auc": "a random ranking's AUC", "mae": "the training mean's MAE",
            "rmse": "the training mean's RMSE"}.get(metric, "the majority-class rate")


def beats_sanity(value: float, floor: float, cfg: GateSettings) -> bool:
    return better(cfg, value) >= better(cfg, floor) - TOLERANCE


def float_not_learned(float_metric: Optional[float], chance: Optional[float], cfg: GateSettings) -> Optional[str]:
    """Why the float model fails the task's sanity bound, or None when it passes."""
    floor = majority_floor(chance, cfg)
    if floor is None or not is_finite(float_metric) or beats_sanity(float_metric, floor, cfg):
        return None
    return (f"the float model's {gate_metric(cfg)} {float_metric:.4f} does not beat {_sanity_name(cfg)} {chance:.4f} "
            f"by min_margin_over_majority {cfg.min_margin_over_majority:g}: it has not learned the task, so no "
            "variant of it is blessed")


def fidelity_reasons(fig: dict, cfg: GateSettings) -> List[str]:
    """Why a variant's outputs are not faithful enough to the float model's (the floors
    min_sqnr_db and min_cosine_similarity); identical outputs pass."""
    reasons = []
    for key, floor, unit in (("sqnr_db", cfg.min_sqnr_db, " dB"), ("cosine_similarity", cfg.min_cosine_similarity, "")):
        if floor is None or fig.get("output_identical"):
            continue
        value = fig.get(key)
        if not is_finite(value) or not value >= floor - TOLERANCE:
            shown = f"{value:.4f}{unit}" if is_finite(value) else f"missing or not finite ({value})"
            reasons.append(f"{key} {shown} < min_{'sqnr_db' if key == 'sqnr_db' else key} {floor:g}{unit} "
                           "(fidelity to the float model's outputs)")
    return reasons


def counts_as_float(name: str, fig: dict, cfg: GateSettings) -> bool:
    """float32, or a mixed variant whose integer-compute fraction is below the floor."""
    if name == FLOAT32:
        return True
    fraction = fig.get("integer_compute_fraction")
    return name in MIXED_VARIANTS and not (is_finite(fraction)
                                           and fraction >= cfg.min_integer_compute_fraction - TOLERANCE)


def judge(
    variants: Dict[str, dict],
    float_metric: Optional[float],
    cfg: GateSettings,
    baseline_metric: Optional[float] = None,
    chance: Optional[float] = None,
    label_free: bool = False,
) -> Dict[str, dict]:
    """For each variant {name: figures}, {name: {'passed': bool, 'reasons': [...]}}.

    `figures` holds the metric under its name (gate_metric(cfg)), 'size_bytes',
    'latency_ms_median', 'vs_float' (and 'vs_deployed' when there is a deployed model:
    degradation dicts {drop, low, high, confidence}), 'integer_compute_fraction', the
    fidelity figures ('sqnr_db', 'cosine_similarity', 'output_identical'), and 'error' when
    the variant could not be evaluated at all. `chance` is the task's trivial predictor's
    figure (`sanity_reference`). `label_free` (task none): no metric is judged, only the
    fidelity floors, size and latency.
    """
    metric = gate_metric(cfg)
    floor = majority_floor(chance, cfg)
    not_learned = None if label_free else float_not_learned(float_metric, chance, cfg)
    verdicts = {}
    for name, fig in variants.items():
        reasons: List[str] = []
        value = fig.get(metric)
        if fig.get("error"):
            reasons.append(fig["error"])
        elif not label_free and not is_finite(value):
            reasons.append(f"{metric} is missing or not finite ({value})")
        elif not label_free and not is_finite(float_metric):
            reasons.append(f"the float model's {metric} is missing or not finite ({float_metric})")
        elif not label_free:
            if not_learned:
                reasons.append(not_learned)
            elif floor is not None and not beats_sanity(value, floor, cfg):
                reasons.append(f"{metric} {value:.4f} does not beat {_sanity_name(cfg)} {chance:.4f} by "
                               f"min_margin_over_majority {cfg.min_margin_over_majority:g}")
            reasons += _drop_reasons(FLOAT_REFERENCE, float_metric, fig.get("vs_float"), cfg)
            if (cfg.min_accuracy is not None and metrics.higher_is_better(metric)
                    and not value >= cfg.min_accuracy - TOLERANCE):
                reasons.append(f"{metric} {value:.4f} < min_accuracy {cfg.min_accuracy:.4f}")
            if baseline_metric is not None:
                if not is_finite(baseline_metric):
                    reasons.append(f"the deployed model's {metric} is not finite ({baseline_metric})")
                else:
                    reasons += _drop_reasons(DEPLOYED_REFERENCE, baseline_metric, fig.get("vs_deployed"), cfg)
        if not fig.get("error") and (label_free or (is_finite(value) and is_finite(float_metric))):
            reasons += fidelity_reasons(fig, cfg)
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
        elif counts_as_float(name, fig, cfg) and not cfg.allow_float32 and not fig.get("error"):
            # (a variant that was not built or evaluated has its reason already: no fraction to judge)
            fraction = fig.get("integer_compute_fraction")
            shown = f"{fraction:.2f}" if is_finite(fraction) else str(fraction)
            reasons.append(f"integer-compute fraction {shown} < min_integer_compute_fraction "
                           f"{cfg.min_integer_compute_fraction:g}: mostly float, so it counts as float32 (set "
                           "allow_float32 to make it eligible)")
        verdicts[name] = {"passed": not reasons, "reasons": reasons or ["all bounds hold"]}
    return verdicts


def resolution_warning(n: int, float_metric: Optional[float], cfg: GateSettings) -> Optional[str]:
    """Why this eval split is too small to resolve max_accuracy_drop, or None."""
    bound = cfg.max_accuracy_drop
    if bound is None or not n or not is_finite(float_metric) or metrics.METRICS[gate_metric(cfg)].interval != \
            metrics.NEWCOMBE:  # a proportion: what one example is worth, and Newcombe's best case, are known
        return None
    if cfg.drop_decision == POINT:
        if 1 / n > bound + TOLERANCE:
            return (f"the eval split has {n} examples: one example is {100 / n:.2f} pp, more than max_accuracy_drop "
                    f"{100 * bound:g} pp, so any single lost example fails and decisions follow noise; "
                    f"add eval examples (at least {math.ceil(1 / bound)})")
        return None
    right = int(round(float_metric * n))
    confidence = 2 * cfg.confidence - 1
    best_case = stats.paired_drop([right, 0, 0, n - right], confidence)
    if best_case.high <= bound + TOLERANCE:
        return None
    need = stats.examples_to_resolve(bound, float_metric, confidence)
    # The best a variant can do is to be right on every example, the float model's misses too.
    perfect = stats.paired_drop([right, 0, n - right, 0], confidence)
    if cfg.drop_decision == LOWER_BOUND:
        consequence = "the gate fails only drops far beyond the bound"
    elif perfect.high > bound + TOLERANCE:
        consequence = "no variant can pass"
    else:
        consequence = "only a variant that is right on examples the float model gets wrong can pass"
    return (f"the eval split has {n} examples: too few to resolve max_accuracy_drop {100 * bound:g} pp at "
            f"{100 * cfg.confidence:g}% confidence (even a variant that agrees with the float model on every example "
            f"has an upper bound of {100 * best_case.high:.2f} pp), so {consequence}; about {need} examples are needed")


def select(variants: Dict[str, dict], verdicts: Dict[str, dict], cfg: GateSettings) -> Tuple[Optional[str], dict]:
    """(the passing variant chosen by cfg.selection or None, how it was chosen)."""
    passing = [n for n, v in verdicts.items() if v["passed"]]
    policy = cfg.selection if isinstance(cfg.selection, str) else "preference"
    if not passing:
        return None, {"policy": policy, "why": "no variant passed the gate"}
    inf = math.inf
    size = lambda n: variants[n].get("size_bytes", inf)  # noqa: E731
    latency = lambda n: variants[n].get("latency_ms_median", inf)  # noqa: E731
    if isinstance(cfg.selection, list):
        chosen = next((n for n in cfg.selection if n in passing), None)
        why = (f"first passing variant of the preference list {cfg.selection}" if chosen
               else f"none of the preferred variants {cfg.selection} passed")
        return chosen, {"policy": policy, "why": why}
    def figure(n, key):  # larger is better: the gate's metric signed by its direction
        value = variants[n].get(key)
        return (better(cfg, value) if key == metric else value) if is_finite(value) else -inf

    metric = gate_metric(cfg)

    metric_margin = cfg.max_accuracy_drop or 0.0

    def deployer_choice(tied: List[str]) -> str:
        """Among tied variants: the largest integer-compute fraction; then the gate's metric,
        where a difference within max_accuracy_drop (what the gate itself calls no loss) is a
        tie too; then the smaller file, the lower latency, the name."""
        top = max(figure(n, "integer_compute_fraction") for n in tied)
        best = [n for n in tied if figure(n, "integer_compute_fraction") >= top - TOLERANCE]
        top = max(figure(n, metric) for n in best)
        best = [n for n in best if figure(n, metric) >= top - metric_margin - TOLERANCE]
        return min(best, key=lambda n: (size(n), latency(n), n))

    def tie_break(chosen: str, tied: List[str], other: str) -> str:
        if len(tied) == 1:
            return ""
        fig = variants[chosen]
        fraction, value = fig.get("integer_compute_fraction"), fig.get(metric)
        shown = (f"integer-compute fraction {fraction:.4f}" if is_finite(fraction) else "no integer-compute fraction")
        shown += f", {metric} {value:.4f}" if is_finite(value) else ""
        # A label-free model has no such metric: its clause is left out.
        by_metric = (f"the better {metric} (differences within max_accuracy_drop {metric_margin:g} are ties), then "
                     if any(is_finite(variants[n].get(metric)) for n in tied) else "")
        return (f"; tied with {', '.join(n for n in sorted(tied) if n != chosen)}, {chosen} wins by the larger "
                f"integer-compute fraction, then {by_metric}the {other} ({shown})")

    if cfg.selection == SMALLEST:
        smallest = min(passing, key=lambda n: (size(n), latency(n), n))
        margin = cfg.size_tie_tolerance * size(smallest)
        tied = [n for n in passing if size(n) - size(smallest) <= margin + TOLERANCE]
        chosen = deployer_choice(tied)
        why = f"smallest passing variant ({size(chosen)} bytes)" if chosen == smallest else (
            f"{chosen} ({size(chosen)} bytes) is within size_tie_tolerance {100 * cfg.size_tie_tolerance:g}% of "
            f"the smallest passing variant, {smallest} ({size(smallest)} bytes)")
        return chosen, {"policy": policy, "smallest": smallest, "tied": sorted(tied), "size_margin_bytes": margin,
                        "why": why + tie_break(chosen, tied, "smaller file")}
    fastest = min(passing, key=lambda n: (latency(n), size(n), n))
    spread = lambda n: variants[n].get("latency_ms_iqr", 0.0) or 0.0  # noqa: E731
    tied = [n for n in passing
            if latency(n) - latency(fastest) <= max(cfg.latency_tie_tolerance * latency(fastest),
                                                    spread(n), spread(fastest)) + TOLERANCE]
    chosen = deployer_choice(tied)
    record = {"policy": policy, "fastest": fastest, "tied": sorted(tied),
              "noise_ms": max(cfg.latency_tie_tolerance * latency(fastest), *(spread(n) for n in tied))}
    if len(tied) == 1:
        record["why"] = f"fastest passing variant ({latency(chosen):.4f} ms median), no other within its noise"
    else:
        record["why"] = (f"{', '.join(sorted(tied))} are within the timing noise of the fastest "
                         f"({latency(fastest):.4f} ms, noise {record['noise_ms']:.4f} ms: the larger of "
                         f"{100 * cfg.latency_tie_tolerance:g}% and the IQR of the runs)"
                         + tie_break(chosen, tied, "smaller file"))
    return chosen, record


def target_reasons(target: DeploymentTarget, fig: dict) -> List[str]:
    """Why a variant that passed the gate cannot ship to `target` (empty: it can)."""
    reasons: List[str] = []
    if target.runtime == TFLM:
        micro = fig.get("tflm")
        if not micro:
            reasons.append("not checked on TFLite Micro")
        elif not micro["runs"]:
            reasons.append(f"does not run on TFLite Micro: {micro['reason']}")
        elif target.max_arena_bytes is not None and not micro["arena_bytes"] <= target.max_arena_bytes:
            reasons.append(f"tensor arena {micro['arena_bytes']} bytes > max_arena_bytes {target.max_arena_bytes}")
    fraction = fig.get("integer_compute_fraction")
    if target.integer_only and not (is_finite(fraction) and fraction >= 1 - TOLERANCE):
        shown = f"{fraction:.2f}" if is_finite(fraction) else str(fraction)
        reasons.append(f"integer-compute fraction {shown} < 1: not integer-only")
    if target.integer_io and not fig.get("integer_io"):
        reasons.append(f"input/output types {fig.get('io_dtypes')} are not int8/uint8")
    size = fig.get("size_bytes")
    if target.max_model_bytes is not None and not (is_finite(size) and size <= target.max_model_bytes):
        reasons.append(f"size {size} bytes > max_model_bytes {target.max_model_bytes}")
    latency = fig.get("latency_ms_median")
    if target.max_latency_ms is not None and not (is_finite(latency) and latency <= target.max_latency_ms):
        reasons.append(f"latency {latency} ms > max_latency_ms {target.max_latency_ms:g}")
    return reasons


def judge_targets(variants: Dict[str, dict], verdicts: Dict[str, dict], cfg: GateSettings) -> Dict[str, dict]:
    """For each configured target: every variant's verdict (the gate's, then the target's
    checks and budgets) and the variant selected for it by its own (or the gate's) policy."""
    out = {}
    for target in cfg.targets:
        target_verdicts = {}
        for name, fig in variants.items():
            reasons = [] if verdicts[name]["passed"] else ["fails the gate: " + "; ".join(verdicts[name]["reasons"])]
            reasons += target_reasons(target, fig)
            target_verdicts[name] = {"passed": not reasons, "reasons": reasons or ["the gate and every target check hold"]}
        policy = cfg if target.selection is None else cfg.model_copy(update={"selection": target.selection})
        selected, selection = select(variants, target_verdicts, policy)
        if selected is None:
            selection["why"] = target_shortfall(target, variants, verdicts, target_verdicts, selection["why"])
        out[target.name] = {"settings": target.model_dump(), "selected": selected, "selection": selection,
                            "verdicts": target_verdicts}
    return out


def _budgets(target: DeploymentTarget) -> List[Tuple[str, object, object]]:
    """The target's checks as (what a variant must do, holds(figures), and for the message
    (what the best figure is, figure(figures), how to show it) or None)."""
    def arena(f):
        micro = f.get("tflm") or {}
        return micro.get("arena_bytes") if micro.get("runs") else None

    checks = []
    if target.runtime == TFLM:
        checks.append(("runs on TFLite Micro", lambda f: bool((f.get("tflm") or {}).get("runs")), None))
        if target.max_arena_bytes is not None:
            checks.append((f"meets max_arena_bytes={target.max_arena_bytes}",
                           lambda f: arena(f) is not None and arena(f) <= target.max_arena_bytes,
                           ("smallest arena", arena, lambda v: f"{v:,} B")))
    if target.integer_only:
        checks.append(("meets integer_only", lambda f: is_finite(f.get("integer_compute_fraction"))
                       and f["integer_compute_fraction"] >= 1 - TOLERANCE,
                       ("largest integer-compute fraction", lambda f: f.get("integer_compute_fraction"),
                        lambda v: f"{v:.2f}")))
    if target.integer_io:
        checks.append(("meets integer_io (int8/uint8 input and output)", lambda f: bool(f.get("integer_io")), None))
    if target.max_model_bytes is not None:
        checks.append((f"meets max_model_bytes={target.max_model_bytes}",
                       lambda f: is_finite(f.get("size_bytes")) and f["size_bytes"] <= target.max_model_bytes,
                       ("smallest file", lambda f: f.get("size_bytes"), lambda v: f"{v:,} B")))
    if target.max_latency_ms is not None:
        checks.append((f"meets max_latency_ms={target.max_latency_ms:g}",
                       lambda f: is_finite(f.get("latency_ms_median"))
                       and f["latency_ms_median"] <= target.max_latency_ms,
                       ("fastest", lambda f: f.get("latency_ms_median"), lambda v: f"{v:.4g} ms")))
    return checks


def target_shortfall(target: DeploymentTarget, variants: Dict[str, dict], verdicts: Dict[str, dict],
                     target_verdicts: Dict[str, dict], why: str) -> str:
    """Why nothing ships to `target`, naming the budget that decided: 'target mcu: no
    variant meets max_arena_bytes=1024 (smallest arena: integer_only 5,232 B)'."""
    if any(v["passed"] for v in target_verdicts.values()):  # some passed, none the preference list names
        return f"target {target.name}: {why}"
    candidates = [n for n in variants if verdicts[n]["passed"]]
    if not candidates:
        return f"target {target.name}: no variant passed the gate"
    decided = []
    for label, holds, best in _budgets(target):
        if any(holds(variants[n]) for n in candidates) or (decided and label.startswith("meets max_arena")
                                                              and decided[0].startswith("runs on")):
            continue
        detail = ""
        if best:
            what, value, shown = best
            measured = [(value(variants[n]), n) for n in candidates if is_finite(value(variants[n]))]
            if measured:
                v, n = (max if what.startswith("largest") else min)(measured)
                detail = f" ({what}: {n} {shown(v)})"
        decided.append(f"{label}{detail}")
    if decided:
        return f"target {target.name}: " + "; ".join(f"no variant {d}" for d in decided)
    return (f"target {target.name}: each variant that passed the gate fails one of its checks: "
            + "; ".join(f"{n}: {'; '.join(target_verdicts[n]['reasons'])}" for n in candidates))
