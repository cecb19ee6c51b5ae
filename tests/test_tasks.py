"""A task per model output (issue #30): the contract names what the judged output predicts
(multiclass, binary, multilabel, regression, none), the examples are checked and parsed for
that task, and every task's metrics and paired intervals match hand-computed or published
values. Nothing here trains."""
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats as scipy_stats
from sklearn.metrics import f1_score, roc_auc_score

from tfx_quantization.model_contract import ModelContract
from tfx_quantization.quantization import data, metrics
from tfx_quantization.quantization.model_spec import ModelSpec, from_signature
from tfx_quantization.settings import GateSettings, SettingsError
from tfx_quantization.tflite_evaluator import beam_pass, gate
from tests.helpers import write_split

pytestmark = pytest.mark.fast
INPUTS = {"features": {"features": ["x"], "shape": [3]}}


def _signature(units, shape=None):
    return {"inputs": {"features": ("float32", [-1, 3])}, "outputs": {"y": ("float32", shape or [-1, units])}}


# ---- the contract ------------------------------------------------------------------------
def test_every_existing_contract_is_a_multiclass_one_and_still_needs_two_classes():
    assert ModelContract(inputs=INPUTS, num_classes=10).task == "multiclass"
    with pytest.raises(SettingsError, match="num_classes = 1: Input should be greater than or equal to 2 for a "
                                            "multiclass classifier .*set task: regression"):
        ModelContract(inputs=INPUTS, num_classes=1)
    with pytest.raises(SettingsError, match="a binary classifier has 2 classes"):
        ModelContract(inputs=INPUTS, num_classes=3, task="binary")


def test_a_regression_contract_with_a_real_valued_label_validates_and_parses(tmp_path):
    contract = ModelContract(inputs=INPUTS, task="regression", label_key="target")
    spec = ModelSpec.of_contract(contract)  # the built-in trainer's spec: one target by default
    assert (spec.task, spec.num_classes, spec.output_units) == ("regression", 1, 1)
    assert ModelContract.of_spec(spec).task == "regression"  # recorded with the model
    assert from_signature(_signature(1), contract).num_classes == 1
    rows = [{"x": [1.0, 2.0, 3.0], "target": 151.5}, {"x": [0.0, 1.0, 0.0], "target": 75}]
    files = write_split(tmp_path / "ok", [data.to_example(r) for r in rows[:1]] * 2 + [data.to_example(rows[1])],
                        shards=1)
    with pytest.raises(ValueError, match="label 'target' is int64 in some examples and float in others"):
        data.check_examples(files, spec)
    files = write_split(tmp_path / "float", [data.to_example(r) for r in rows[:1]] * 2, shards=1)
    checked = data.check_examples(files, spec)
    assert checked.label_dtype == "float32"
    _, y = data.parse_numpy(list(data.iter_serialized(files)), checked)
    assert y.dtype == np.float32 and y.shape == (2, 1) and y[0, 0] == pytest.approx(151.5)
    assert data.label_mean(files, checked) == [pytest.approx(151.5)]
    files = write_split(tmp_path / "int", [data.to_example(rows[1])], shards=1)  # a target stored as int64
    _, y = data.parse_numpy(list(data.iter_serialized(files)), data.check_examples(files, spec))
    assert y.dtype == np.float32 and y[0, 0] == 75.0


def test_labels_that_do_not_fit_the_task_are_named(tmp_path):
    regression = ModelSpec.of_contract(ModelContract(inputs=INPUTS, task="regression", label_key="t"))
    files = write_split(tmp_path / "r", [data.to_example({"x": [1.0, 2.0, 3.0], "t": "high"}),
                                         data.to_example({"x": [1.0, 2.0, 3.0], "t": float("nan")})], shards=1)
    with pytest.raises(ValueError, match="label 't' is not 1 number.*label 't' holds NaN"):
        data.check_examples(files, regression)
    multilabel = ModelSpec.of_contract(ModelContract(inputs=INPUTS, task="multilabel", num_classes=3))
    files = write_split(tmp_path / "m", [data.to_example({"x": [1.0, 2.0, 3.0], "label": [0, 1, 2]}),
                                         data.to_example({"x": [1.0, 2.0, 3.0], "label": [1]})], shards=1)
    with pytest.raises(ValueError, match="holds values other than 0 and 1.*is not 3 integers"):
        data.check_examples(files, multilabel)


def test_a_label_free_model_reads_no_label_and_any_output_shape(tmp_path):
    contract = ModelContract(task="none")
    spec = from_signature(_signature(0, shape=[-1, 4, 4, 2]), contract)
    assert not spec.has_labels and spec.output_units == 1
    files = write_split(tmp_path / "n", [data.to_example({"features": [1.0, 2.0, 3.0]})], shards=1)
    checked = data.check_examples(files, spec)  # no label to miss
    _, y = data.parse_numpy(list(data.iter_serialized(files)), checked)
    assert y.shape == (1, 0)
    with pytest.raises(ValueError, match="has no label.*set gate.min_sqnr_db"):
        metrics.gate_metric_of("none", GateSettings())
    with pytest.raises(ValueError, match="'auc' is not a metric of task 'regression'"):
        metrics.task_metric("regression", "auc")
    assert metrics.task_metric("regression", None) == "mae" and metrics.task_metric("multiclass", None) == "accuracy"


def test_the_built_in_trainer_builds_a_label_free_model_as_an_autoencoder_of_its_input():
    from tfx_quantization.training import reconstruction_problem

    spec = ModelSpec.of_contract(ModelContract(task="none", inputs=INPUTS, output="reconstruction"))
    assert spec.num_classes == spec.output_units == 3 and not reconstruction_problem(spec)  # the input's size
    with pytest.raises(ValueError, match="num_classes is 2 with task 'none'.*reconstruct its input.*the input's 3 "
                                         "values: leave num_classes unset"):
        ModelSpec.of_contract(ModelContract(task="none", inputs=INPUTS, num_classes=2))
    # A label-free model of another shape (an embedding) cannot be its own target: named, not trained.
    embedding = from_signature(_signature(8), ModelContract(task="none"))
    assert "output 'y' has 8 values and the inputs {'features': 3}" in reconstruction_problem(embedding)


# ---- fidelity ----------------------------------------------------------------------------
def test_fidelity_figures_match_hand_computed_values():
    r = np.array([[1.0, 2.0], [0.0, 0.0]])
    v = np.array([[1.0, 1.0], [0.0, 0.0]])
    c = metrics.fidelity_counts(r, v)
    half = metrics.fidelity_counts(r[:1], v[:1])
    summed = beam_pass.SumCounts().add_input(dict(half), metrics.fidelity_counts(r[1:], v[1:]))
    for key in c:
        assert np.asarray(summed[key]) == pytest.approx(np.asarray(c[key]))  # streaming: batches add up
    f = metrics.fidelity_figures(c)
    # signal 1 + 4 = 5, noise 1: 10 log10 5 dB; cosines (1 + 2) / (sqrt 5 sqrt 2) and 1 (both zero)
    assert f["sqnr_db"] == pytest.approx(10 * math.log10(5))
    assert f["cosine_similarity"] == pytest.approx((3 / math.sqrt(10) + 1) / 2)
    assert f["mean_abs_error"] == pytest.approx(1 / 4) and f["max_abs_error"] == 1.0
    assert metrics.fidelity_figures(metrics.fidelity_counts(r, r))["output_identical"]


# ---- regression --------------------------------------------------------------------------
def test_mae_interval_is_the_paired_t_interval():
    # Hand-computed: reference errors 1, 2, 3 and variant errors 2, 2, 5 (|pred - y| with
    # y = 0): d = 1, 0, 2, mean 1, sd 1, t(0.95; 2) = 2.919986, half width 2.919986 / sqrt 3.
    y = np.zeros((3, 1))
    ref, var = np.array([[1.0], [2.0], [3.0]]), np.array([[2.0], [-2.0], [5.0]])
    counts = metrics.regression_counts(var, y, {"float_model": ref})
    got = metrics.comparison("mae", counts, "float_model", 0.90)
    assert got["drop"] == pytest.approx(1.0)
    assert got["high"] == pytest.approx(1 + 2.919986 / math.sqrt(3), abs=1e-6)
    assert got["low"] == pytest.approx(1 - 2.919986 / math.sqrt(3), abs=1e-6)
    # ... and scipy's paired t test gives the same interval on larger data.
    rng = np.random.default_rng(0)
    y = rng.normal(size=(200, 2))
    ref, var = y + rng.normal(scale=0.5, size=y.shape), y + rng.normal(scale=0.6, size=y.shape)
    got = metrics.comparison("mae", metrics.regression_counts(var, y, {"float_model": ref}), "float_model", 0.9)
    a_var, a_ref = np.abs(var - y).mean(1), np.abs(ref - y).mean(1)
    expected = scipy_stats.ttest_rel(a_var, a_ref).confidence_interval(0.9)
    assert (got["low"], got["high"]) == (pytest.approx(expected.low), pytest.approx(expected.high))
    figures = metrics.regression_figures(metrics.regression_counts(var, y, {}))
    assert figures["mae"] == pytest.approx(a_var.mean())
    assert figures["rmse"] == pytest.approx(math.sqrt(np.mean((var - y) ** 2)))


def test_rmse_interval_is_the_delta_method_and_covers_as_it_claims():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(50, 1))
    ref, var = y + rng.normal(scale=0.5, size=y.shape), y + rng.normal(scale=0.7, size=y.shape)
    got = metrics.comparison("rmse", metrics.regression_counts(var, y, {"f": ref}), "f", 0.9)
    s_r, s_v = ((ref - y) ** 2).ravel(), ((var - y) ** 2).ravel()
    m_r, m_v = s_r.mean(), s_v.mean()
    grad = np.array([-0.5 / math.sqrt(m_r), 0.5 / math.sqrt(m_v)])
    se = math.sqrt(grad @ np.cov(np.stack([s_r, s_v])) @ grad / 50)  # by hand, with numpy's covariance
    t = scipy_stats.t.ppf(0.95, 49)
    assert got["drop"] == pytest.approx(math.sqrt(m_v) - math.sqrt(m_r))
    assert got["high"] == pytest.approx(got["drop"] + t * se)
    # Coverage: over 400 simulated eval sets of 300 examples, the 90 % interval holds the
    # true difference (sqrt(0.49) - sqrt(0.25) = 0.2) about 90 % of the time.
    hits = 0
    for _ in range(400):
        y = rng.normal(size=(300, 1))
        ref, var = y + rng.normal(scale=0.5, size=y.shape), y + rng.normal(scale=0.7, size=y.shape)
        c = metrics.comparison("rmse", metrics.regression_counts(var, y, {"f": ref}), "f", 0.9)
        hits += c["low"] <= 0.2 <= c["high"]
    assert 0.85 <= hits / 400 <= 0.95


# ---- binary: AUC and DeLong ------------------------------------------------------------------
def _delong_direct(ref, var, y, confidence):
    """DeLong et al. (1988) written out directly: O(n_pos * n_neg) kernel per model."""
    pos, neg = y == 1, y == 0
    comps = []
    for s in (ref, var):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        comps.append((psi.mean(1), psi.mean(0), psi.mean()))
    s10 = np.cov(np.stack([comps[0][0], comps[1][0]]))
    s01 = np.cov(np.stack([comps[0][1], comps[1][1]]))
    c = np.array([1.0, -1.0])
    var_diff = c @ s10 @ c / pos.sum() + c @ s01 @ c / neg.sum()
    drop = comps[0][2] - comps[1][2]
    z = scipy_stats.norm.ppf(0.5 + confidence / 2)
    return comps[0][2], comps[1][2], drop - z * math.sqrt(var_diff), drop + z * math.sqrt(var_diff)


def test_binned_delong_equals_the_direct_computation_on_scores_on_the_bin_grid():
    rng = np.random.default_rng(2)
    y = (rng.random(300) < 0.25).astype(int)  # imbalanced: 25 % positives
    ref_bins = np.floor((0.3 * y + rng.random(300) * 0.7) * metrics.AUC_BINS).astype(int)
    var_bins = np.clip(ref_bins + rng.integers(-6, 7, 300), 0, metrics.AUC_BINS - 1)
    ref, var = metrics.bin_probability(ref_bins), metrics.bin_probability(var_bins)  # scores on the bins' grid
    assert (metrics.auc_bins(ref) == ref_bins).all() and (metrics.auc_bins(var) == var_bins).all()
    counts = metrics.auc_counts(var, y, {"float_model": ref})
    got = metrics.comparison("auc", counts, "float_model", 0.9)
    auc_r, auc_v, low, high = _delong_direct(ref, var, y, 0.9)
    assert got["auc_reference"] == pytest.approx(roc_auc_score(y, ref)) == pytest.approx(auc_r)
    assert got["auc_variant"] == pytest.approx(auc_v)
    assert metrics.auc_from_histogram(counts["auc_hist"]) == pytest.approx(roc_auc_score(y, var))
    assert (got["low"], got["high"]) == (pytest.approx(low), pytest.approx(high))


def test_the_reports_roc_curve_is_scikit_learns_on_the_bin_grid():
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(4)
    y = (rng.random(400) < 0.25).astype(int)
    bins = np.floor((0.3 * y + rng.random(400) * 0.7) * metrics.AUC_BINS).astype(int)
    p = metrics.bin_probability(bins)  # scores on the bins' grid: the binned curve is the exact one
    roc = metrics.roc_from_histogram(metrics.auc_counts(p, y, {})["auc_hist"])
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    assert roc["fpr"] == pytest.approx(fpr.tolist()) and roc["tpr"] == pytest.approx(tpr.tolist())
    assert np.trapz(roc["tpr"], roc["fpr"]) == pytest.approx(roc_auc_score(y, p))
    assert metrics.roc_from_histogram(metrics.auc_counts(p, np.zeros_like(y), {})["auc_hist"]) == {"fpr": [],
                                                                                                   "tpr": []}

def test_auc_bins_are_monotone_and_keep_confident_scores_apart():
    p = np.array([0.0, 1e-7, 1e-4, 1e-3, 3e-3, 0.5, 0.997, 0.999, 0.9999, 1 - 1e-7, 1.0])
    b = metrics.auc_bins(p)
    assert (np.diff(b) >= 0).all() and b[0] == 0 and b[-1] == metrics.AUC_BINS - 1
    # 1e-4 .. 0.9999 each in its own bin; 256 equal probability bins would keep 3 of these 7 apart.
    assert len(set(b[2:-2])) == 7


def test_delong_on_a_hand_computed_example():
    # Positives score 0.75, 0.5; negatives 0.5, 0.25 (reference). Pairs: (0.75 > 0.5),
    # (0.75 > 0.25), (0.5 = 0.5: 1/2), (0.5 > 0.25): AUC = 3.5 / 4 = 0.875. The variant
    # swaps the tie into a win: 0.75, 0.5 vs 0.25, 0.25: AUC 1.
    y = np.array([1, 1, 0, 0])
    ref, var = np.array([0.75, 0.5, 0.5, 0.25]), np.array([0.75, 0.5, 0.25, 0.25])
    got = metrics.comparison("auc", metrics.auc_counts(var, y, {"f": ref}), "f", 0.9)
    # V10 (ref) = [1, 0.75], V10 (var) = [1, 1]; V01 (ref) = [0.75, 1], V01 (var) = [1, 1]:
    # the variant's components are constant, so var(diff) = (var(V10 ref) + var(V01 ref)) / 2
    # = (0.03125 + 0.03125) / 2 = 0.03125.
    assert (got["auc_reference"], got["auc_variant"], got["drop"]) == (0.875, 1.0, -0.125)
    half = scipy_stats.norm.ppf(0.95) * math.sqrt(0.03125)
    assert got["high"] == pytest.approx(-0.125 + half)


# ---- multilabel ------------------------------------------------------------------------------
def test_micro_and_macro_f1_are_scikit_learns():
    rng = np.random.default_rng(3)
    y = (rng.random((100, 4)) < [0.5, 0.2, 0.05, 0.0]).astype(int)
    p = np.clip(y * 0.6 + rng.random((100, 4)) * 0.5, 0, 1)
    c = metrics.multilabel_counts(p, y, 0.5)
    got = metrics.multilabel_figures(c)
    pred = (p >= 0.5).astype(int)
    assert got["micro_f1"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=1.0))


@pytest.mark.parametrize("metric", ["micro_f1", "macro_f1"])
def test_the_f1_drops_delta_method_interval_matches_a_paired_bootstrap(metric):
    rng = np.random.default_rng(5)
    n, prevalence = 600, [0.5, 0.2, 0.08, 0.0]
    y = (rng.random((n, 4)) < prevalence).astype(int)
    ref = np.clip(y * 0.6 + rng.random((n, 4)) * 0.5, 0, 1)
    var = np.clip(ref + rng.normal(0, 0.12, (n, 4)), 0, 1)  # a noisier copy: some decisions flip
    half = n // 2  # streamed in two batches: the sums add
    parts = [metrics.multilabel_counts(var[s], y[s], 0.5, {"f": ref[s]}) for s in (slice(0, half), slice(half, n))]
    counts = {k: parts[0][k] + parts[1][k] for k in parts[0]}
    counts["n"] = n
    got = metrics.comparison(metric, counts, "f", 0.9)
    average = metric.split("_")[0]
    sk = lambda p, idx=slice(None): f1_score(y[idx], (p[idx] >= 0.5).astype(int), average=average,  # noqa: E731
                                             zero_division=1.0)
    assert got["method"] == metrics.DELTA_F1 and got["drop"] == pytest.approx(sk(ref) - sk(var))
    # The paired bootstrap over examples (both models on the same resampled examples) as the reference.
    drops = []
    for _ in range(400):
        idx = rng.integers(0, n, n)
        drops.append(sk(ref, idx) - sk(var, idx))
    se_delta = (got["high"] - got["low"]) / (2 * scipy_stats.t.ppf(0.95, n - 1))
    assert se_delta == pytest.approx(np.std(drops, ddof=1), rel=0.15)

# ---- the gate on a regression and a label-free model ---------------------------------------------
def test_the_gate_bounds_an_error_metrics_increase_and_the_training_mean():
    cfg = GateSettings(metric="mae", max_accuracy_drop=None, max_relative_drop=0.05)
    fig = lambda mae, high: {"mae": mae, "vs_float": {"drop": mae - 40.0, "low": mae - 41.0, "high": high,  # noqa: E731
                                                      "confidence": 0.9}}
    ok = gate.judge({"a": fig(41.0, 41.9 - 40.0)}, 40.0, cfg, chance=60.0)["a"]
    assert ok["passed"], ok  # upper bound of the increase 1.9 <= 5 % of 40
    worse = gate.judge({"a": fig(41.0, 2.1)}, 40.0, cfg, chance=60.0)["a"]
    assert not worse["passed"] and "relative mae increase vs float model 0.0525" in worse["reasons"][0]
    # A regressor no better than the training mean (60 * (1 - 0.02) = 58.8) blesses nothing.
    unlearned = gate.judge({"a": fig(59.0, 0.0)}, 59.0, cfg, chance=60.0)["a"]
    assert not unlearned["passed"] and "does not beat the training mean's MAE 60.0000" in unlearned["reasons"][0]
    # Among tied variants the lower error wins.
    figures = {"integer_only": dict(fig(45.0, 0.1), size_bytes=1000, integer_compute_fraction=1.0),
               "full_integer": dict(fig(41.0, 0.1), size_bytes=1010, integer_compute_fraction=1.0)}
    chosen, _ = gate.select(figures, {n: {"passed": True} for n in figures}, cfg)
    assert chosen == "full_integer"


def test_fidelity_floors_gate_a_label_free_model_alone():
    cfg = GateSettings(min_sqnr_db=30.0, min_cosine_similarity=0.99)
    figures = {"integer_only": {"sqnr_db": 35.0, "cosine_similarity": 0.999},
               "float16": {"sqnr_db": 25.0, "cosine_similarity": 0.999},
               "dynamic_range": {"sqnr_db": None, "output_identical": True}}
    verdicts = gate.judge(figures, None, cfg, label_free=True)
    assert verdicts["integer_only"]["passed"] and verdicts["dynamic_range"]["passed"]
    assert verdicts["float16"]["reasons"] == ["sqnr_db 25.0000 dB < min_sqnr_db 30 dB (fidelity to the float "
                                              "model's outputs)"]
    # Selection among tied passing variants names no metric a label-free model does not have.
    for name, size in (("integer_only", 1000), ("dynamic_range", 1010), ("float16", 2000)):
        figures[name].update(size_bytes=size, latency_ms_median=0.01, integer_compute_fraction=0.5)
    chosen, selection = gate.select(figures, verdicts, cfg)
    assert chosen == "integer_only" and "tied with dynamic_range" in selection["why"]
    assert "accuracy" not in selection["why"], selection["why"]


@pytest.mark.parametrize("script, csv", [("export_diabetes.py", "diabetes/diabetes.csv"),
                                         ("export_breast_cancer.py", "breast_cancer/breast_cancer.csv"),
                                         ("export_digits_two_heads.py", "digits_two_heads/digits_two_heads.csv")])
def test_the_shipped_workloads_regenerate_identical_bytes(tmp_path, script, csv):
    import subprocess
    import sys
    from pathlib import Path

    data_dir = Path(__file__).resolve().parents[1] / "data"
    out = tmp_path / "out.csv"
    subprocess.run([sys.executable, str(data_dir / script), "--out", str(out)], check=True, capture_output=True)
    assert out.read_bytes() == (data_dir / csv).read_bytes()


# ---- a multi-output model: a task per output ------------------------------------------------
TWO_HEADS = {"inputs": {"features": ("float32", [-1, 3])},
             "outputs": {"digit": ("float32", [-1, 4]), "count": ("float32", [-1, 1])}}


def _two_heads(**extra):
    return ModelContract(inputs=INPUTS, output="digit", extra_outputs=[dict(dict(output="count", label_key="count"),
                                                                            **extra)])


def test_a_multi_output_contract_names_each_output_and_its_task_against_the_signature():
    spec = from_signature(TWO_HEADS, _two_heads())
    assert spec.output_names == ["digit", "count"]
    assert [(o.task, o.num_classes, o.label_key) for o in spec.output_specs()] == [
        ("multiclass", 4, "label"), ("regression", 1, "count")]
    recorded = ModelContract.of_spec(spec)  # what a stage records reads back the same
    assert recorded.extra_outputs == _two_heads(num_classes=1).extra_outputs and from_signature(TWO_HEADS,
                                                                                                recorded) == spec
    assert ModelSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match=r"contract.extra_outputs names \['box'\], which signature 'serving_default' "
                                         r"does not return \(it returns \['count', 'digit'\]\)"):
        from_signature(TWO_HEADS, ModelContract(inputs=INPUTS, output="digit",
                                                extra_outputs=[{"output": "box", "label_key": "box"}]))
    for bad, message in (({"task": "regression", "label_key": ""}, "has no label_key"),
                         ({"output": "digit"}, r"output\(s\) \['digit'\] named twice"),
                         ({"label_key": "x"}, "label_key 'x' also feeds input 'features'")):
        with pytest.raises(SettingsError, match=message):
            _two_heads(**bad)
    with pytest.raises(SettingsError, match="name the primary output"):
        ModelContract(inputs=INPUTS, extra_outputs=[{"output": "count", "label_key": "count"}])


def test_every_output_label_is_checked_and_parsed_by_its_task(tmp_path):
    spec = from_signature(TWO_HEADS, _two_heads())
    rows = [{"x": [0.1, 0.2, float(i)], "label": i % 4, "count": float(i)} for i in range(6)]
    checked = data.check_examples(write_split(tmp_path / "ok", [data.to_example(r) for r in rows]), spec)
    assert checked.extra_outputs[0].label_dtype == "float32" and checked.label_dtype == "int64"
    x, labels = data.parse_batch([data.to_example(r).SerializeToString() for r in rows], checked, all_labels=True)
    assert labels["digit"].numpy().tolist() == [0, 1, 2, 3, 0, 1]
    assert labels["count"].numpy().reshape(-1).tolist() == [0, 1, 2, 3, 4, 5]
    rows[2].pop("count")
    with pytest.raises(ValueError, match="label 'count' is missing: 1 of 6 example"):
        data.check_examples(write_split(tmp_path / "bad", [data.to_example(r) for r in rows]), spec)
