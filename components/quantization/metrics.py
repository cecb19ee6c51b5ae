"""The task table and its streaming metrics: what each output's task is judged by, how the
gate's paired interval is computed, the sanity bound, and the accumulators behind them.

Every accumulator is a dict of numpy arrays computed per batch and combined by adding (keys
starting with `max_` by taking the maximum): its size depends on the model's output width
and fixed bin counts, never on the number of examples, so evaluation memory is flat in the
eval split and any number of Beam workers gives the same sums. Which method, per metric:

  fidelity (any output, no label) streaming sums: n, sum of the reference's squares, of the
        squared and absolute differences, of the per-example cosine similarity, max |diff|,
        and top-1 agreement for classifiers. SQNR (dB) = 10 log10(sum r^2 / sum (v - r)^2).
  accuracy, top_k_accuracy (multiclass), accuracy at the threshold (binary)
        the 2x2 table of paired outcomes; Newcombe's paired interval (quantization/stats.py).
  mae, rmse (regression)   streaming sums of each model's per-example error e (the mean over
        the targets of |pred - y|, resp. (pred - y)^2), of e^2, and of e_ref * e_var. MAE's
        degradation is the mean of d = e_var - e_ref with the paired t interval (Student 1908;
        what scipy.stats.ttest_rel's confidence_interval gives from the same values); RMSE's
        is sqrt(MSE_var) - sqrt(MSE_ref) with the delta method over the same sums. A paired
        bootstrap would need every example kept (or a second pass): these sums stream.
  auc (binary)   fixed histograms: each example's positive-class probability falls in one of
        AUC_BINS = 256 equal bins of its logit on [-AUC_LOGIT_RANGE, +AUC_LOGIT_RANGE] (12:
        probabilities within 6e-6 of 0 or 1 share the end bins). Bins of the logit, not of
        the probability: a confident model puts most examples within 1/256 of 0 or 1, where
        equal probability bins would tie them (on the breast cancer workload they cut the
        float model's AUC by several points). TFMA's AUC also counts predictions in fixed
        buckets. For a paired comparison the joint histogram of (reference bin, variant bin)
        is kept per class (2 * 256^2 counts, 1 MiB): DeLong's structural components and their
        covariance (DeLong, DeLong & Clarke-Pearson 1988, Biometrics 44:837-845) are exact
        functions of it, ties within a bin counting 1/2 as in the Mann-Whitney statistic.
  micro_f1, macro_f1 (multilabel)   per-label true positive, false positive, false
        negative counts at the threshold. Each F1 is a ratio of sums of per-example counts,
        F1_l = sum 2tp / sum (2tp + fp + fn); against a reference on the same examples, the
        per-example vector z = (2tp, 2tp + fp + fn) per label for both models [4 * labels] is
        summed with its outer product (labels^2 * 16 sums, flat in the examples), and the
        F1 drop's interval is the delta method on those means with their sample covariance
        and Student's t (n - 1): the RMSE method's, for a ratio. A paired bootstrap would need
        the examples kept or random weights that every runner reproduces.

Pure numpy/scipy, no TensorFlow: the evaluator's Beam pass computes the counts, the
evaluator turns them into figures here, the gate decides from the figures.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as _scipy_stats

from tfx_quantization.model_contract import BINARY, MULTICLASS, MULTILABEL, NO_LABELS, REGRESSION
from tfx_quantization import settings as _settings
from tfx_quantization.quantization import stats

AUC_BINS = 256  # bins of the logit (module docstring)
AUC_LOGIT_RANGE = 12.0  # the bins span logits -12..12
NEWCOMBE, PAIRED_T, DELTA_T, DELONG, DELTA_F1, POINT_ONLY = (
    "Newcombe paired (Wilson)", "paired t", "paired delta method (t)", "DeLong paired",
    "paired delta method on ratios of per-example counts (t)", "none (observed value only)")


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row of the metric table."""

    name: str
    higher_is_better: bool
    interval: str  # the paired interval method of its degradation (module docstring)
    unit: str = ""  # '' for a rate (shown in pp), else the label's unit


@dataclasses.dataclass(frozen=True)
class Task:
    """One row of the task table: the metrics a task reports, the gate's default metric, and
    its sanity bound (what the float model and a variant must beat)."""

    name: str
    metrics: Tuple[str, ...]
    default_metric: Optional[str]  # None: gated by the fidelity floors alone
    sanity: str  # the trivial predictor the model must beat


METRICS: Dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", True, NEWCOMBE),
    Metric("top_k_accuracy", True, NEWCOMBE),
    Metric("auc", True, DELONG),
    Metric("mae", False, PAIRED_T, unit="label units"),
    Metric("rmse", False, DELTA_T, unit="label units"),
    Metric("micro_f1", True, DELTA_F1),
    Metric("macro_f1", True, DELTA_F1),
)}
TASKS: Dict[str, Task] = {t.name: t for t in (
    Task(MULTICLASS, ("accuracy", "top_k_accuracy"), "accuracy", "the majority-class rate (top-k: the k largest)"),
    Task(BINARY, ("auc", "accuracy"), "auc", "AUC 0.5 (random ranking); accuracy: the majority-class rate"),
    Task(MULTILABEL, ("micro_f1", "macro_f1"), "micro_f1", "none"),
    Task(REGRESSION, ("mae", "rmse"), "mae", "predicting the training mean for every example"),
    Task(NO_LABELS, (), None, "none (no labels): fidelity floors"),
)}
# The settings validate gate.metric against settings.METRICS without importing this module.
assert set(METRICS) == set(_settings.METRICS), "settings.METRICS must list the metrics of the table above"
FIDELITY = ("sqnr_db", "cosine_similarity", "mean_abs_error", "max_abs_error")  # + agreement_with_float


def task_metric(task: str, metric: Optional[str]) -> Optional[str]:
    """The gate's metric for `task`: `metric` when the task reports it, the task's default
    when None; a ValueError naming the task's metrics otherwise."""
    row = TASKS[task]
    if metric is None:
        return row.default_metric
    if metric not in row.metrics:
        floors = "; a label-free model is gated by min_sqnr_db / min_cosine_similarity" if not row.metrics else ""
        raise ValueError(f"gate metric {metric!r} is not a metric of task {task!r} (it reports {list(row.metrics)}"
                         f"{floors}): set gate.metric to one of them, or leave it unset for the task's default")
    return metric


def gate_metric_of(task: str, gate) -> Optional[str]:
    """The metric the gate (settings.GateSettings) judges for `task`: gate.metric, else the
    task's default; None for a label-free model, judged by its fidelity floors. A one-line
    ValueError when the task has no such metric, or a label-free model has no floor."""
    metric = task_metric(task, gate.metric)
    if metric is None and gate.min_sqnr_db is None and gate.min_cosine_similarity is None:
        raise ValueError(f"task {task!r} has no label, so the gate judges the variants by fidelity to the float model "
                         "alone: set gate.min_sqnr_db and/or gate.min_cosine_similarity")
    return metric


def higher_is_better(metric: str) -> bool:
    return METRICS[metric].higher_is_better


# ---- fidelity to the reference, for any output ----------------------------------------------
def fidelity_counts(reference: np.ndarray, variant: np.ndarray) -> Dict[str, np.ndarray]:
    """Sums of one batch: reference and variant outputs [B, ...] (float; flattened per
    example). Non-finite variant rows are left out (counted in `fid_non_finite`)."""
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    v = np.asarray(variant, np.float64).reshape(len(variant), -1)
    finite = np.all(np.isfinite(v), axis=1) & np.all(np.isfinite(r), axis=1)
    r, v = r[finite], v[finite]
    diff = v - r
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(v, axis=1)
    same = np.all(diff == 0, axis=1)
    # Cosine of two zero vectors (identical outputs) is 1; of a zero and a non-zero one, 0.
    cosine = np.where(norms > 0, np.sum(r * v, axis=1) / np.where(norms > 0, norms, 1), np.where(same, 1.0, 0.0))
    return {"fid_n": np.int64(len(r)), "fid_values": np.int64(r.size), "fid_signal": np.sum(r * r),
            "fid_noise": np.sum(diff * diff), "fid_abs": np.sum(np.abs(diff)), "fid_cosine": np.sum(cosine),
            "max_fid_abs": np.max(np.abs(diff)) if diff.size else np.float64(0.0),
            "fid_non_finite": np.int64((~finite).sum())}


def fidelity_figures(c: dict) -> Dict[str, Optional[float]]:
    """SQNR (dB), mean cosine similarity, mean and max absolute error from fidelity_counts'
    sums. `output_identical` is True when every value matched (SQNR then infinite, recorded
    as None in JSON: the gate's floors pass it)."""
    n, values, signal, noise = c["fid_n"], c["fid_values"], float(c["fid_signal"]), float(c["fid_noise"])
    if not n:
        return {k: None for k in FIDELITY}
    sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
    return {"sqnr_db": sqnr, "cosine_similarity": float(c["fid_cosine"]) / n,
            "mean_abs_error": float(c["fid_abs"]) / values, "max_abs_error": float(c["max_fid_abs"]),
            "output_identical": noise == 0}


# ---- regression ------------------------------------------------------------------------------
def errors(pred: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-example absolute and squared error [B], each the mean over the targets."""
    d = np.asarray(pred, np.float64).reshape(len(y), -1) - np.asarray(y, np.float64).reshape(len(y), -1)
    return np.mean(np.abs(d), axis=1), np.mean(d * d, axis=1)


def regression_counts(pred: np.ndarray, y: np.ndarray, references: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Sums of one batch for MAE and RMSE, and against each reference model's predictions
    (same examples) the paired sums of the error products."""
    a, s = errors(pred, y)
    out = {"reg_n": np.int64(len(a)), "reg_abs": a.sum(), "reg_sq": s.sum(), "reg_abs2": (a * a).sum(),
           "reg_sq2": (s * s).sum()}
    for name, ref in references.items():
        ra, rs = errors(ref, y)
        out[f"reg_paired_{name}"] = np.array([ra.sum(), (ra * ra).sum(), (ra * a).sum(),
                                              rs.sum(), (rs * rs).sum(), (rs * s).sum()])
    return out


def regression_figures(c: dict) -> Dict[str, float]:
    n = c["reg_n"]
    if not n:
        return {"mae": math.nan, "rmse": math.nan}
    return {"mae": float(c["reg_abs"]) / n, "rmse": math.sqrt(float(c["reg_sq"]) / n)}


def paired_mean_degradation(n: int, sum_r: float, sum_r2: float, sum_v: float, sum_v2: float, sum_rv: float,
                            confidence: float) -> Tuple[float, float, float]:
    """(mean of d = v - r, low, high): the two-sided paired t interval at `confidence` of the
    mean difference of per-example values v and r given only their sums (Student's t with
    n - 1 degrees of freedom; with one example the interval is unbounded)."""
    mean = (sum_v - sum_r) / n
    if n < 2:
        return mean, -math.inf, math.inf
    ss = sum_v2 + sum_r2 - 2 * sum_rv - n * mean * mean  # sum of (d - mean)^2
    se = math.sqrt(max(ss, 0.0) / (n - 1) / n)
    t = float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))
    return mean, mean - t * se, mean + t * se


def rmse_degradation(n: int, sum_r: float, sum_r2: float, sum_v: float, sum_v2: float, sum_rv: float,
                     confidence: float) -> Tuple[float, float, float]:
    """(RMSE_v - RMSE_r, low, high) from the sums of the per-example squared errors r and v:
    the delta method on g(m_r, m_v) = sqrt(m_v) - sqrt(m_r) with the sample covariance of
    (r, v) over n, and Student's t quantile with n - 1 degrees of freedom."""
    m_r, m_v = sum_r / n, sum_v / n
    point = math.sqrt(m_v) - math.sqrt(m_r)
    if n < 2 or m_r <= 0 or m_v <= 0:
        return point, -math.inf, math.inf
    var_r = (sum_r2 - n * m_r * m_r) / (n - 1)
    var_v = (sum_v2 - n * m_v * m_v) / (n - 1)
    cov = (sum_rv - n * m_r * m_v) / (n - 1)
    g_r, g_v = -0.5 / math.sqrt(m_r), 0.5 / math.sqrt(m_v)
    se = math.sqrt(max(g_r * g_r * var_r + g_v * g_v * var_v + 2 * g_r * g_v * cov, 0.0) / n)
    t = float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))
    return point, point - t * se, point + t * se


# ---- binary: ROC AUC from fixed histograms, DeLong's paired interval ---------------------------
def auc_bins(p: np.ndarray, bins: int = AUC_BINS) -> np.ndarray:
    """The bin of each probability: `bins` equal bins of its logit on [-AUC_LOGIT_RANGE,
    AUC_LOGIT_RANGE], the ends taking everything beyond (NaN: bin 0). Monotone in p, so
    ranks are kept up to ties within a bin."""
    p = np.clip(np.nan_to_num(np.asarray(p, np.float64), nan=0.0), 1e-300, 1.0)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-np.minimum(p, 1 - 1e-16))
    position = (np.clip(logit, -AUC_LOGIT_RANGE, AUC_LOGIT_RANGE) + AUC_LOGIT_RANGE) / (2 * AUC_LOGIT_RANGE)
    return np.clip(np.floor(position * bins), 0, bins - 1).astype(np.int64)


def bin_probability(b: np.ndarray, bins: int = AUC_BINS) -> np.ndarray:
    """A probability inside each bin (its logit's centre): scores on the bins' grid."""
    logit = (np.asarray(b, np.float64) + 0.5) / bins * 2 * AUC_LOGIT_RANGE - AUC_LOGIT_RANGE
    return 1.0 / (1.0 + np.exp(-logit))


def auc_counts(p: np.ndarray, y: np.ndarray, references: Dict[str, np.ndarray],
               bins: int = AUC_BINS) -> Dict[str, np.ndarray]:
    """Histograms of one batch: the model's positive-class probabilities p [B] by class
    (y 0/1), and with each reference's probabilities the joint histogram
    [class, reference bin, model bin], flattened."""
    b, y = auc_bins(p, bins), np.asarray(y).astype(np.int64).reshape(-1)
    out = {"auc_hist": np.bincount(y * bins + b, minlength=2 * bins).astype(np.int64)}
    for name, ref in references.items():
        cells = (y * bins + auc_bins(ref, bins)) * bins + b
        out[f"auc_joint_{name}"] = np.bincount(cells, minlength=2 * bins * bins).astype(np.int64)
    return out


def _placements(neg: np.ndarray, pos: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per bin: DeLong's V10 of a positive in that bin (the share of negatives ranked below
    it, ties 1/2) and V01 of a negative in that bin (the share of positives above it)."""
    m, n = neg.sum(), pos.sum()
    below = np.cumsum(neg) - neg
    above = pos[::-1].cumsum()[::-1] - pos
    return (below + 0.5 * neg) / m, (above + 0.5 * pos) / n


def auc_from_histogram(hist: np.ndarray) -> float:
    """The ROC AUC (Mann-Whitney, ties 1/2) from auc_counts' `auc_hist` [2 * bins]."""
    neg, pos = np.split(np.asarray(hist, np.float64), 2)
    if not neg.sum() or not pos.sum():
        return math.nan
    v10, _ = _placements(neg, pos)
    return float(np.sum(pos * v10) / pos.sum())


def roc_from_histogram(hist: np.ndarray) -> Dict[str, list]:
    """The ROC curve of auc_counts' `auc_hist` [2 * bins] (for the report): false and true
    positive rates from (0, 0) to (1, 1), one point per threshold between occupied bins,
    highest scores first. Examples within one bin are tied, so the curve joins its points by
    straight segments: its trapezoid area is auc_from_histogram's AUC (ties counting 1/2).
    At most bins + 1 points whatever the number of examples; empty when a class is absent."""
    neg, pos = (part[::-1] for part in np.split(np.asarray(hist, np.float64), 2))
    if not neg.sum() or not pos.sum():
        return {"fpr": [], "tpr": []}
    occupied = (neg + pos) > 0
    fpr = np.concatenate([[0.0], np.cumsum(neg[occupied]) / neg.sum()])
    tpr = np.concatenate([[0.0], np.cumsum(pos[occupied]) / pos.sum()])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def delong_paired(joint: np.ndarray, confidence: float, bins: int = AUC_BINS) -> Dict[str, float]:
    """DeLong's paired comparison of two AUCs on the same examples from the joint histogram
    [class, reference bin, variant bin] (auc_counts): both AUCs, the drop
    AUC_ref - AUC_var and its two-sided normal interval at `confidence` (DeLong et al. 1988:
    the structural components V10 over positives and V01 over negatives, their 2x2 sample
    covariances S10 and S01, var = (S10 contrast) / n_pos + (S01 contrast) / n_neg)."""
    h = np.asarray(joint, np.float64).reshape(2, bins, bins)
    neg, pos = h[0], h[1]
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg < 2 or n_pos < 2:
        return {"auc_reference": math.nan, "auc_variant": math.nan, "drop": math.nan, "low": -math.inf,
                "high": math.inf}
    # Marginal histograms: axis 1 of pos/neg is the reference's bin, axis 2 the variant's.
    v10_r, v01_r = _placements(neg.sum(1), pos.sum(1))
    v10_v, v01_v = _placements(neg.sum(0), pos.sum(0))
    auc_r = float(np.sum(pos.sum(1) * v10_r) / n_pos)
    auc_v = float(np.sum(pos.sum(0) * v10_v) / n_pos)

    def components(joint, a, b, mean_a, mean_b, count):
        """Sample (co)variances of the per-example components a (by reference bin) and b (by
        variant bin) over the examples the joint histogram counts: [var a, var b, cov a b]."""
        sums = (np.sum(joint.sum(1) * a * a), np.sum(joint.sum(0) * b * b), np.sum(joint * np.outer(a, b)))
        return [(sums[0] - count * mean_a ** 2) / (count - 1), (sums[1] - count * mean_b ** 2) / (count - 1),
                (sums[2] - count * mean_a * mean_b) / (count - 1)]

    s10 = components(pos, v10_r, v10_v, auc_r, auc_v, n_pos)
    s01 = components(neg, v01_r, v01_v, auc_r, auc_v, n_neg)
    var = (s10[0] + s10[1] - 2 * s10[2]) / n_pos + (s01[0] + s01[1] - 2 * s01[2]) / n_neg
    z = float(_scipy_stats.norm.ppf(0.5 + confidence / 2))
    drop, half = auc_r - auc_v, z * math.sqrt(max(var, 0.0))
    return {"auc_reference": auc_r, "auc_variant": auc_v, "drop": drop, "low": drop - half, "high": drop + half}


# ---- multilabel ---------------------------------------------------------------------------------
def _f1_terms(p: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
    """Per-example F1 numerator and denominator terms [B, 2, labels]: 2tp and 2tp + fp + fn."""
    pred, y = np.asarray(p) >= threshold, np.asarray(y).astype(bool)
    tp = (pred & y).astype(np.float64)
    return np.stack([2 * tp, 2 * tp + (pred & ~y) + (~pred & y)], axis=1)


def multilabel_counts(p: np.ndarray, y: np.ndarray, threshold: float,
                      references: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """Per-label true positive, false positive and false negative counts [3, labels] of one
    batch: probabilities p [B, labels] at or above `threshold` are predicted positive; and,
    per reference model's probabilities, the sums of the paired F1 terms z = (reference's
    2tp, 2tp + fp + fn, the variant's) [4 * labels] and of z z^T (`ml_paired_<name>`,
    `ml_paired2_<name>`: the F1 intervals' delta method, module docstring)."""
    pred, y = np.asarray(p) >= threshold, np.asarray(y).astype(bool)
    out = {"ml_counts": np.stack([(pred & y).sum(0), (pred & ~y).sum(0), (~pred & y).sum(0)]).astype(np.int64)}
    mine = _f1_terms(p, y, threshold)
    for name, ref in (references or {}).items():
        z = np.concatenate([_f1_terms(ref, y, threshold), mine], axis=1).reshape(len(y), -1)
        out[f"ml_paired_{name}"], out[f"ml_paired2_{name}"] = z.sum(0), z.T @ z
    return out


def f1_degradation(metric: str, n: int, sums: np.ndarray, products: np.ndarray,
                   confidence: float) -> Tuple[float, float, float]:
    """(F1_reference - F1_variant, low, high) for micro_f1 or macro_f1 from the sums of the
    paired F1 terms z [4 * labels] and of z z^T over n examples (multilabel_counts): the
    delta method on the F1s as functions of the means of z, with the sample covariance of z
    and Student's t quantile with n - 1 degrees of freedom. A label with no positive and no
    prediction in either model scores 1 (scikit-learn's macro F1) and contributes no variance."""
    m = np.asarray(sums, np.float64) / n
    a_r, b_r, a_v, b_v = m.reshape(4, -1)
    labels = len(a_r)
    grad = np.zeros((4, labels))
    if metric == "micro_f1":
        A_r, B_r, A_v, B_v = a_r.sum(), b_r.sum(), a_v.sum(), b_v.sum()
        f_r, f_v = (A_r / B_r if B_r else 1.0), (A_v / B_v if B_v else 1.0)
        if B_r:
            grad[0], grad[1] = 1 / B_r, -A_r / B_r ** 2
        if B_v:
            grad[2], grad[3] = -1 / B_v, A_v / B_v ** 2
    else:
        safe_r, safe_v = np.where(b_r > 0, b_r, 1), np.where(b_v > 0, b_v, 1)
        f_r, f_v = np.where(b_r > 0, a_r / safe_r, 1.0).mean(), np.where(b_v > 0, a_v / safe_v, 1.0).mean()
        grad[0], grad[1] = np.where(b_r > 0, 1 / safe_r, 0) / labels, np.where(b_r > 0, -a_r / safe_r ** 2, 0) / labels
        grad[2], grad[3] = np.where(b_v > 0, -1 / safe_v, 0) / labels, np.where(b_v > 0, a_v / safe_v ** 2, 0) / labels
    point = float(f_r - f_v)
    if n < 2:
        return point, -math.inf, math.inf
    cov = (np.asarray(products, np.float64) - n * np.outer(m, m)) / (n - 1)
    g = grad.reshape(-1)
    se = math.sqrt(max(float(g @ cov @ g), 0.0) / n)
    t = float(_scipy_stats.t.ppf(0.5 + confidence / 2, n - 1))
    return point, point - t * se, point + t * se


def multilabel_figures(c: dict) -> Dict[str, float]:
    """Micro F1 (pooled counts) and macro F1 (the mean of per-label F1; a label never
    predicted nor present scores 1: nothing to get wrong), as scikit-learn defines them."""
    tp, fp, fn = (np.asarray(v, np.float64) for v in c["ml_counts"])

    def f1(tp, fp, fn):
        denominator = 2 * tp + fp + fn
        return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 1.0)

    return {"micro_f1": float(f1(tp.sum(), fp.sum(), fn.sum())), "macro_f1": float(np.mean(f1(tp, fp, fn)))}


# ---- the gate's comparison of two models on the same examples -------------------------------------
PAIRED_TABLES = ("accuracy", "top_k_accuracy")  # the order of the stacked 2x2 tables in `paired_vs_<reference>`


def comparison(metric: str, counts: dict, reference: str, confidence: float) -> Optional[Dict[str, float]]:
    """A variant's degradation against `reference` in `metric`, signed so that positive is
    worse (accuracy, AUC: reference - variant; MAE, RMSE: variant - reference), with its
    two-sided interval at `confidence` by the metric's method (METRICS[metric].interval):
    {drop, low, high, confidence, method, ...}. `counts` are the variant's summed counts
    from the Beam pass, holding against the reference: the 2x2 tables
    (`paired_vs_<reference>`), the joint AUC histogram (`auc_joint_<reference>`) or the
    error sums (`reg_paired_<reference>`) or the F1 terms' sums (`ml_paired_<reference>`).
    None when there is nothing to compare: the reference was not evaluated, no example, or
    the metric has no paired interval."""
    method = METRICS[metric].interval
    if method == NEWCOMBE:
        tables = counts.get(f"paired_vs_{reference}")
        table = None if tables is None else [int(v) for v in np.asarray(tables)[PAIRED_TABLES.index(metric)]]
        return dict(stats.paired_drop(table, confidence).to_dict(), method=method) if table and sum(table) else None
    if method == DELONG:
        joint = counts.get(f"auc_joint_{reference}")
        return None if joint is None else dict(delong_paired(joint, confidence), confidence=confidence, method=method)
    if method == DELTA_F1:
        sums, n = counts.get(f"ml_paired_{reference}"), int(counts.get("n", 0))
        if sums is None or not n:
            return None
        drop, low, high = f1_degradation(metric, n, sums, counts[f"ml_paired2_{reference}"], confidence)
        return {"drop": drop, "low": low, "high": high, "confidence": confidence, "n": n, "method": method}
    paired = counts.get(f"reg_paired_{reference}")
    n = int(counts.get("reg_n", 0))
    if paired is None or not n or method not in (PAIRED_T, DELTA_T):
        return None
    ra, ra2, rva, rs, rs2, rvs = (float(v) for v in paired)
    if metric == "mae":
        drop, low, high = paired_mean_degradation(n, ra, ra2, float(counts["reg_abs"]), float(counts["reg_abs2"]),
                                                  rva, confidence)
    else:
        drop, low, high = rmse_degradation(n, rs, rs2, float(counts["reg_sq"]), float(counts["reg_sq2"]), rvs,
                                           confidence)
    return {"drop": drop, "low": low, "high": high, "confidence": confidence, "n": n, "method": method}
