"""TFLiteEvaluator: Beam metrics equal a plain loop, the gate, selection, baseline, report."""
import json
import os
import shutil
from html.parser import HTMLParser

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from apache_beam.options.pipeline_options import PipelineOptions
from tfx.types import standard_artifacts

from tfx_quantization import contracts
from tfx_quantization.post_training_quantizer import build
from tfx_quantization.quantization import data
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.quantization.interpreter import TFLiteRunner, accuracy
from tfx_quantization.quantization.interpreter import quantize as quantize_values
from tfx_quantization.settings import GateSettings, QuantizeSettings, TrainSettings
from tfx_quantization.tflite_evaluator import evaluate, gate
from tfx_quantization.tflite_evaluator.component import TFLiteEvaluator
from tfx_quantization.tflite_evaluator.executor import Executor
from tfx_quantization.training import save_serving_model
from tests.helpers import artifact, digits_rows, write_examples

ONE_WORKER = lambda: beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"]))  # noqa: E731
TWO_WORKERS = lambda: beam.Pipeline(options=PipelineOptions(  # noqa: E731
    ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]))


def _eval_dir(examples):
    return f"{examples.uri}/Split-eval"


def _params(**gate_kwargs):
    return GateSettings(**dict(dict(latency_runs=10, latency_warmup=2), **gate_kwargs))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, digits_examples, trained_digits, digits_quantized):
    out = tmp_path_factory.mktemp("ev") / "evaluation"
    result = evaluate.evaluate_models(_eval_dir(digits_examples), trained_digits["float"], digits_quantized,
                                      str(out), _params(), ONE_WORKER)
    return result, str(out)


def test_beam_accuracy_equals_a_plain_interpreter_loop(evaluated, digits_examples, trained_digits, digits_quantized):
    result, _ = evaluated
    files = data.split_files(_eval_dir(digits_examples))
    x, y = data.parse_numpy(list(data.iter_serialized(files)), data.spec_for(trained_digits["float"], files))
    x = x["image"]
    manifest = contracts.read_manifest(digits_quantized)
    for name, entry in manifest.variants.items():
        runner = TFLiteRunner(os.path.join(digits_quantized, entry.file))
        probs = np.concatenate([runner.predict(x[i:i + 1]) for i in range(len(x))])
        assert result.variants[name]["accuracy"] == pytest.approx(accuracy(probs, y), abs=1e-9), name
        assert result.variants[name]["num_examples"] == len(y) == 599
    serving = tf.saved_model.load(trained_digits["float"]).signatures["serving_default"]
    float_probs = serving(image=tf.constant(x))["probabilities"].numpy()
    assert result.float_model["accuracy"] == pytest.approx(accuracy(float_probs, y), abs=1e-9)
    assert result.variants["float32"]["agreement_with_float"] == pytest.approx(1.0, abs=2 / 599)


def test_default_gate_blesses_the_smallest_passing_variant(evaluated):
    result, _ = evaluated
    assert result.blessed and result.selected_variant != "float32"
    passing = [n for n, v in result.verdicts.items() if v.passed]
    sizes = {n: result.variants[n]["size_bytes"] for n in passing}
    # Files within size_tie_tolerance (5%) of the smallest are tied: the larger integer-compute
    # fraction wins, then the better accuracy where it is more than max_accuracy_drop (0.01)
    # better, then the smaller file (tests/test_user_models.py has the cases).
    tied = sorted(n for n in passing if sizes[n] <= 1.05 * min(sizes.values()))
    assert result.selection.tied == tied and result.selection.smallest == min(sizes, key=sizes.get)
    fraction = {n: result.variants[n]["integer_compute_fraction"] for n in tied}
    best = [n for n in tied if fraction[n] >= max(fraction.values()) - 1e-9]
    accuracy = {n: result.variants[n]["accuracy"] for n in best}
    best = [n for n in best if accuracy[n] >= max(accuracy.values()) - 0.01 - 1e-9]
    assert result.selected_variant == min(best, key=lambda n: (sizes[n], n))
    assert not result.verdicts["float32"].passed
    assert "allow_float32" in result.verdicts["float32"].reasons[0]
    for fig in result.variants.values():
        assert fig["latency_ms_median"] > 0 and fig["latency_ms_p90"] >= fig["latency_ms_median"]


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.imgs, self.open = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        if tag not in ("meta", "img", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (self.open[-5:], tag)
        self.open.pop()


REPORT_SECTIONS = ("decision", "variants", "intervals", "selection", "trade-offs", "per-class", "confusion",
                   "deployed", "history", "gate")
REPORT_PLOTS = ("accuracy_vs_size.png", "accuracy_vs_latency.png", "paired_intervals.png", "latency.png",
                "per_class_accuracy.png", "confusion.png", "fidelity.png")


def _sections(page):
    parser = _Collect()
    parser.feed(page)
    assert page.startswith("<!DOCTYPE html>") and parser.open == []
    return parser


def test_report_renders_every_section_with_embedded_plots_and_names_the_selection(evaluated):
    result, out = evaluated
    page = open(os.path.join(out, "report.html")).read()
    parser = _sections(page)
    for section in REPORT_SECTIONS:
        assert f'<section id="{section}">' in page, section
    assert len(parser.imgs) == len(REPORT_PLOTS) and all(src.startswith("data:image/png;base64,") for src in parser.imgs)
    for name in REPORT_PLOTS:
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f'alt="{name}"' in page
    assert f"Selected <b>{result.selected_variant}</b>" in page
    assert "No model is deployed yet" in page and "No version has been pushed yet" in page
    # Each built variant's runtime (the interpreter that ran it), activation ranges and weight corrections.
    builds = page[page.index('<table id="builds">'):]
    builds = builds[:builds.index("</table>")]
    for name in [n for n, m in result.manifest.items() if m.status == "ok"]:
        assert (f'<td class="name">{name}</td><td class="text">tensorflow-lite</td>\n<td class="text">–</td>\n'
                f'<td class="text">none</td>') in builds, name
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["selected_variant"] == result.selected_variant
    assert set(metrics["variants"]) == set(result.variants)
    assert metrics["settings"]["max_accuracy_drop"] == 0.01
    outcome = json.load(open(os.path.join(out, contracts.OUTCOME_FILE)))
    assert outcome["blessed"] is True and outcome["selected_variant"] == result.selected_variant
    assert outcome["why"] and outcome["selected_metrics"]["vs_float"]["high"] <= 0.01


def test_every_comparison_is_paired_and_its_interval_matches_the_counts(evaluated):
    result, _ = evaluated
    n = result.num_eval_examples
    float_right = round(result.float_model["accuracy"] * n)
    for name, fig in result.variants.items():
        a, b, c, d = fig["paired_vs_float_model"]["accuracy"]
        assert a + b + c + d == n and a + b == float_right and a + c == round(fig["accuracy"] * n), name
        assert fig["vs_float"]["drop"] == pytest.approx(fig["accuracy_drop"], abs=1e-12)
        assert fig["vs_float"]["low"] <= fig["vs_float"]["drop"] <= fig["vs_float"]["high"]
    assert result.majority_class_rate == pytest.approx(max(result.float_model["class_total"]) / n)
    assert np.sum(result.float_model["confusion"]) == n
    assert np.trace(result.float_model["confusion"]) == float_right


def test_two_workers_give_identical_metrics(tmp_path, digits_examples, trained_digits, digits_quantized, evaluated):
    two = evaluate.evaluate_models(_eval_dir(digits_examples), trained_digits["float"], digits_quantized,
                                   str(tmp_path / "two"), _params(), TWO_WORKERS)
    one, _ = evaluated
    keys = ("accuracy", "top_k_accuracy", "agreement_with_float", "per_class_accuracy", "num_examples")
    for name in one.variants:
        assert {k: one.variants[name][k] for k in keys} == {k: two.variants[name][k] for k in keys}
    assert one.float_model == two.float_model


@pytest.mark.fast
def test_input_quantization_rounds_then_clips():
    x = np.array([-100.0, -12.86, -0.149, 0.149, 0.151, 0.25, 12.74, 100.0])
    q = quantize_values(x, scale=0.1, zero_point=0, dtype=np.int8)
    assert q.tolist() == [-128, -128, -1, 1, 2, 2, 127, 127]
    # A plain cast (what TFMA does) truncates and wraps around instead.
    assert (x / 0.1).astype(np.int8).tolist() != q.tolist()
    u = quantize_values(np.array([-5.0, 0.0, 1.004, 300.0]), scale=1.0, zero_point=128, dtype=np.uint8)
    assert u.tolist() == [123, 128, 129, 255]


def test_runner_clips_out_of_range_inputs_on_a_real_int8_model(digits_quantized):
    manifest = contracts.read_manifest(digits_quantized)
    runner = TFLiteRunner(os.path.join(digits_quantized, manifest.variants["integer_only"].file))
    scale, zero_point = runner.input["quantization"]
    x = np.full((1, 8, 8, 1), 1e6, np.float32)
    assert np.all(runner.prepare_input(x) == 127)
    assert np.all(runner.prepare_input(-x) == -128)
    assert np.all(np.isfinite(runner.predict(x)))


@pytest.fixture(scope="module")
def damaged_quantized(tmp_path_factory, trained_digits, digits_calibration):
    """A full_integer variant converted from the float model with its weights zeroed."""
    root = tmp_path_factory.mktemp("damaged")
    spec = ModelSpec.read(trained_digits["float"])
    model = keras.models.load_model(trained_digits["float"])
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    save_serving_model(model, root / "model", spec)
    build.quantize_all(str(root / "model"), str(root / "q"), QuantizeSettings(variants=["float32", "full_integer"]),
                          calibration_files=data.split_files(f"{digits_calibration}/Split-calibration"))
    return str(root / "q")


def test_gate_blocks_a_damaged_model_with_the_reason(tmp_path, digits_examples, trained_digits, damaged_quantized):
    result = evaluate.evaluate_models(_eval_dir(digits_examples), trained_digits["float"], damaged_quantized,
                                      str(tmp_path / "ev"), _params(allow_float32=True), ONE_WORKER)
    assert not result.blessed and result.selected_variant is None
    for name in ("full_integer", "float32"):
        assert not result.verdicts[name].passed
        assert any("drop vs float model" in r for r in result.verdicts[name].reasons)
        assert result.variants[name]["accuracy"] < 0.2
    assert "not blessed" in open(tmp_path / "ev" / "report.html").read()


POINT = GateSettings(drop_decision="point")


def _fig(accuracy, table, cfg=POINT, **extra):
    """Figures as the evaluator records them: the metric and the paired table vs float."""
    return dict(accuracy=accuracy, vs_float=gate.comparison(table, cfg), **extra)


@pytest.mark.fast
def test_absolute_bound_is_inclusive_and_relative_is_relative_to_the_float_metric():
    figures = {"a": _fig(0.48, [48, 2, 0, 50], size_bytes=1)}  # float 0.50, variant 0.48
    abs_only = GateSettings(max_accuracy_drop=0.02, drop_decision="point")
    assert gate.judge(figures, 0.50, abs_only)["a"]["passed"]  # drop 0.02 <= 0.02
    over = {"a": _fig(0.48, [4800, 201, 0, 4999], size_bytes=1)}  # float 0.5001
    assert not gate.judge(over, 0.5001, abs_only)["a"]["passed"]
    rel_only = GateSettings(max_accuracy_drop=None, max_relative_drop=0.04, drop_decision="point")
    assert gate.judge(figures, 0.50, rel_only)["a"]["passed"]  # 0.02 / 0.50 = 0.04
    verdict = gate.judge(figures, 0.50, rel_only.with_overrides('{"max_relative_drop": 0.039}'))["a"]
    assert not verdict["passed"] and "relative accuracy drop vs float model 0.0400" in verdict["reasons"][0]
    both = GateSettings(max_accuracy_drop=0.01, max_relative_drop=0.05, drop_decision="point")
    [reason] = gate.judge(figures, 0.50, both)["a"]["reasons"]
    assert reason.startswith("accuracy drop vs float model +0.0200 (90% interval [") and reason.endswith(
        "; point +0.0200) > max_accuracy_drop 0.0100")


@pytest.mark.fast
def test_the_drop_decision_follows_the_documented_semantics():
    # float 0.91, variant 0.90 on 1000 examples: drop 0.01 with a paired interval around it.
    table = [880, 30, 20, 70]
    comparison = gate.comparison(table, GateSettings())
    assert comparison["low"] < 0 < 0.01 < comparison["high"]
    decide = lambda t=table, **kw: gate.judge(  # noqa: E731
        {"a": dict(accuracy=(t[0] + t[2]) / sum(t), vs_float=gate.comparison(t, GateSettings(**kw)))},
        (t[0] + t[1]) / sum(t), GateSettings(**kw))["a"]["passed"]
    assert decide(max_accuracy_drop=0.01, drop_decision="point")  # observed 0.01 <= 0.01
    assert not decide(max_accuracy_drop=0.01)  # the upper bound is above the bound
    assert decide(max_accuracy_drop=comparison["high"])  # exactly at it: inclusive
    assert decide(max_accuracy_drop=0.0, drop_decision="lower_bound")  # the lower bound is below 0
    clearly_worse = [800, 80, 10, 110]  # drop 0.07
    assert gate.comparison(clearly_worse, GateSettings())["low"] > 0.05
    assert not decide(clearly_worse, max_accuracy_drop=0.05, drop_decision="lower_bound")


@pytest.mark.fast
def test_size_latency_min_accuracy_and_non_finite_bounds():
    figures = {"a": _fig(0.9, [90, 0, 0, 10], size_bytes=1000, latency_ms_median=2.0),
               "b": {"accuracy": float("nan"), "size_bytes": 10, "latency_ms_median": 0.1}}
    cfg = GateSettings(max_model_bytes=999, max_latency_ms=1.0, min_accuracy=0.95, drop_decision="point")
    reasons = gate.judge(figures, 0.9, cfg)["a"]["reasons"]
    assert any("size 1000 bytes > max_model_bytes 999" in r for r in reasons)
    assert any("latency 2 ms > max_latency_ms 1" in r for r in reasons)
    assert any("< min_accuracy 0.9500" in r for r in reasons)
    assert not gate.judge(figures, 0.9, GateSettings())["b"]["passed"]
    missing = gate.judge({"c": _fig(0.9, [90, 0, 0, 10], size_bytes=1)}, 0.9,
                         GateSettings(max_latency_ms=1.0, drop_decision="point"))
    assert missing["c"]["reasons"] == ["latency None ms > max_latency_ms 1"]
    unpaired = gate.judge({"d": {"accuracy": 0.9}}, 0.9, GateSettings())["d"]["reasons"]
    assert unpaired == ["no paired counts against the float model: the drop cannot be judged"]
    with pytest.raises(ValueError, match="the gate needs an accuracy bound"):
        GateSettings(max_accuracy_drop=None)


@pytest.mark.fast
def test_a_model_that_does_not_beat_the_majority_class_blesses_nothing():
    figures = {"integer_only": _fig(0.30, [30, 0, 0, 70])}
    verdict = gate.judge(figures, 0.30, GateSettings(), chance=0.30)["integer_only"]
    assert not verdict["passed"] and "does not beat the majority-class rate 0.3000" in verdict["reasons"][0]
    # A float model below the bound blesses nothing, even a variant that scores above it.
    better = {"integer_only": _fig(0.40, [30, 0, 10, 60])}
    verdict = gate.judge(better, 0.30, GateSettings(drop_decision="point"), chance=0.30)["integer_only"]
    assert not verdict["passed"] and verdict["reasons"][0].startswith("the float model's accuracy 0.3000 does not beat")
    assert gate.judge(figures, 0.30, GateSettings(min_margin_over_majority=None, drop_decision="point"), chance=0.30)["integer_only"]["passed"]
    assert gate.chance_rate([5, 30, 15], "accuracy", 5) == 0.6
    assert gate.chance_rate([5, 30, 15], "top_k_accuracy", 2) == 0.9


@pytest.mark.fast
def test_a_mostly_float_mixed_variant_counts_as_float32():
    cfg = POINT
    figures = {"selective_integer": _fig(0.9, [90, 0, 0, 10], integer_compute_fraction=0.0),
               "integer_only": _fig(0.9, [90, 0, 0, 10], integer_compute_fraction=0.5)}
    verdicts = gate.judge(figures, 0.9, cfg)
    assert not verdicts["selective_integer"]["passed"]
    assert "integer-compute fraction 0.00 < min_integer_compute_fraction 0.8" in verdicts["selective_integer"]["reasons"][0]
    assert verdicts["integer_only"]["passed"]  # the floor is for mixed variants only
    figures["selective_integer"]["integer_compute_fraction"] = 0.8
    assert gate.judge(figures, 0.9, cfg)["selective_integer"]["passed"]  # at the floor: inclusive
    figures["selective_integer"]["integer_compute_fraction"] = 0.1
    assert gate.judge(figures, 0.9, POINT.with_overrides('{"allow_float32": true}'))["selective_integer"]["passed"]


@pytest.mark.fast
def test_selection_policies():
    small_slow, big_fast, failing = "integer_only", "float16", "dynamic_range"
    ok = [90, 0, 0, 10]
    figures = {small_slow: _fig(0.9, ok, size_bytes=10, latency_ms_median=5.0),
               big_fast: _fig(0.9, ok, size_bytes=100, latency_ms_median=1.0),
               failing: _fig(0.1, [10, 80, 0, 10], size_bytes=1, latency_ms_median=0.1)}
    verdicts = gate.judge(figures, 0.9, POINT)
    assert gate.select(figures, verdicts, GateSettings(selection="smallest"))[0] == small_slow
    assert gate.select(figures, verdicts, GateSettings(selection="fastest"))[0] == big_fast
    assert gate.select(figures, verdicts, GateSettings(selection=[failing, big_fast, small_slow]))[0] == big_fast
    assert gate.select(figures, verdicts, GateSettings(selection=[failing]))[0] is None
    with pytest.raises(ValueError, match="selection = 'biggest': use 'smallest', 'fastest' or a list"):
        GateSettings.build(selection="biggest")


@pytest.mark.fast
def test_fastest_treats_latencies_within_the_noise_as_tied_and_takes_the_smallest():
    figures = {"float16": dict(size_bytes=100, latency_ms_median=1.00, latency_ms_iqr=0.01),
               "integer_only": dict(size_bytes=30, latency_ms_median=1.04, latency_ms_iqr=0.01),
               "full_integer": dict(size_bytes=20, latency_ms_median=1.30, latency_ms_iqr=0.01)}
    verdicts = {n: {"passed": True} for n in figures}
    chosen, record = gate.select(figures, verdicts, GateSettings(selection="fastest"))
    assert chosen == "integer_only" and record["tied"] == ["float16", "integer_only"]
    assert record["fastest"] == "float16" and record["noise_ms"] == pytest.approx(0.05)
    assert "within the timing noise" in record["why"]
    # A spread (IQR) wider than the difference ties a slower variant too.
    figures["full_integer"]["latency_ms_iqr"] = 0.4
    assert gate.select(figures, verdicts, GateSettings(selection="fastest"))[0] == "full_integer"
    # With no tolerance and tight spreads, the fastest wins alone.
    figures["full_integer"]["latency_ms_iqr"] = 0.01
    assert gate.select(figures, verdicts, GateSettings(selection="fastest", latency_tie_tolerance=0))[0] == "float16"


def test_no_regression_against_the_deployed_baseline(tmp_path, digits_examples, trained_digits, digits_quantized):
    # A weakly trained model: its variants lose nothing against their own float model, but
    # fall well below the strong model that is deployed.
    from tfx_quantization import training
    from tests.helpers import DIGITS_CONTRACT

    weak = training.train(
        f"{digits_examples.uri}/Split-train", _eval_dir(digits_examples), str(tmp_path / "weak"), None,
        str(tmp_path / "logs"), TrainSettings(epochs=1, steps_per_epoch=4, seed=0), DIGITS_CONTRACT,
    )
    build.quantize_all(str(tmp_path / "weak"), str(tmp_path / "wq"), QuantizeSettings(variants=["float32", "dynamic_range"]))
    deployed = os.path.join(digits_quantized, "integer_only", "model.tflite")
    kwargs = dict(params=_params(max_accuracy_drop=0.05), pipeline_factory=ONE_WORKER)
    without = evaluate.evaluate_models(_eval_dir(digits_examples), str(tmp_path / "weak"), str(tmp_path / "wq"),
                                       str(tmp_path / "e1"), **kwargs)
    assert without.selected_variant == "dynamic_range"
    with_baseline = evaluate.evaluate_models(
        _eval_dir(digits_examples), str(tmp_path / "weak"), str(tmp_path / "wq"), str(tmp_path / "e2"),
        baseline_tflite=deployed, baseline_info={"version": "3"}, **kwargs)
    assert weak.float_accuracy < with_baseline.baseline["accuracy"] - 0.05
    assert not with_baseline.blessed
    assert any("drop vs deployed model" in r for r in with_baseline.verdicts["dynamic_range"].reasons)
    assert with_baseline.baseline["version"] == "3"
    assert with_baseline.variants["dynamic_range"]["vs_deployed"]["drop"] > 0.05


def test_deployed_model_shift_and_history_come_from_the_registry(tmp_path, digits_examples, trained_digits,
                                                                   digits_quantized):
    from tfx_quantization.registry import Registry
    from tfx_quantization.settings import PushSettings
    from tfx_quantization.tflite_evaluator.executor import deployed_model, registry_history

    push = PushSettings(destination=str(tmp_path / "registry"), model_name="digits")
    registry = Registry(push.destination, push.model_name)
    deployed = os.path.join(digits_quantized, "integer_only", "model.tflite")
    # The deployed version's manifest recorded a higher accuracy than it now scores: a shift.
    registry.push(os.path.join(digits_quantized, "float16", "model.tflite"),
                  {"variant": "float16", "metrics": {"accuracy": 0.97}})
    registry.push(deployed, {"variant": "integer_only", "metrics": {"accuracy": 0.9999}})
    path, info = deployed_model(push.to_json())
    result = evaluate.evaluate_models(
        _eval_dir(digits_examples), trained_digits["float"], digits_quantized, str(tmp_path / "ev"),
        _params(max_deployed_shift=0.005), ONE_WORKER, baseline_tflite=path, baseline_info=info,
        history=registry_history(push.to_json()))
    shift = result.deployed_shift
    assert shift.flagged and shift.version == "2" and shift.recorded == 0.9999
    assert shift.now == result.baseline["accuracy"] and shift.fall > 0.005
    assert any(w.startswith("shift: the deployed version 2") for w in result.warnings)
    outcome = json.load(open(tmp_path / "ev" / contracts.OUTCOME_FILE))
    assert outcome["deployed_shift"]["flagged"] and outcome["warnings"] == result.warnings
    page = open(tmp_path / "ev" / "report.html").read()
    assert "Deployed version 2 (integer_only)" in page and "(flagged)" in page
    assert [h["version"] for h in result.history] == [1, 2] and 'alt="history.png"' in page
    quiet = evaluate.evaluate_models(
        _eval_dir(digits_examples), trained_digits["float"], digits_quantized, str(tmp_path / "ev2"),
        _params(), ONE_WORKER, baseline_tflite=path, baseline_info=dict(info, recorded_metrics={"accuracy": 0.99}))
    assert not quiet.deployed_shift.flagged and not quiet.warnings


@pytest.fixture(scope="module")
def constant_class(tmp_path_factory, trained_digits, digits_calibration):
    """A model that answers class 3 for every input, and its float32/integer_only variants."""
    root = tmp_path_factory.mktemp("constant")
    spec = ModelSpec.read(trained_digits["float"])
    inputs = keras.Input(spec.input_shape, name=spec.input_name)
    bias = np.zeros(10, np.float32)
    bias[3] = 5.0
    dense = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(bias))
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    save_serving_model(model, root / "model", spec)
    build.quantize_all(str(root / "model"), str(root / "q"), QuantizeSettings(variants=["float32", "integer_only"]),
                       calibration_files=data.split_files(f"{digits_calibration}/Split-calibration"))
    return str(root / "model"), str(root / "q")


def test_a_constant_class_model_is_not_blessed(tmp_path, digits_examples, constant_class):
    model_dir, quantized = constant_class
    result = evaluate.evaluate_models(_eval_dir(digits_examples), model_dir, quantized, str(tmp_path / "ev"),
                                      _params(), ONE_WORKER)
    # Its variants agree with it on every example, so only the majority bound can stop them.
    assert result.variants["integer_only"]["vs_float"]["lost"] == 0
    assert result.float_model["accuracy"] <= result.majority_class_rate
    assert not result.blessed
    assert "does not beat the majority-class rate" in result.verdicts["integer_only"].reasons[0]
    assert any("has not learned the task" in w for w in result.warnings)
    outcome = json.load(open(tmp_path / "ev" / contracts.OUTCOME_FILE))
    assert outcome["blessed"] is False and any("majority-class" in why for why in outcome["why"])


def test_a_selective_variant_at_zero_integer_ops_is_not_eligible(tmp_path, digits_examples, trained_digits,
                                                                  digits_quantized):
    quantized = tmp_path / "q"
    shutil.copytree(digits_quantized, quantized)
    manifest = json.loads((quantized / "manifest.json").read_text())
    # A "selective" model with every layer left float: the float32 model's bytes.
    (quantized / "selective_integer").mkdir(exist_ok=True)
    shutil.copy(quantized / "float32" / "model.tflite", quantized / "selective_integer" / "model.tflite")
    manifest["variants"] = {"selective_integer": dict(manifest["variants"]["float32"], file="selective_integer/model.tflite"),
                            "integer_only": manifest["variants"]["integer_only"]}
    (quantized / "manifest.json").write_text(json.dumps(manifest))
    result = evaluate.evaluate_models(_eval_dir(digits_examples), trained_digits["float"], str(quantized),
                                      str(tmp_path / "ev"), _params(), ONE_WORKER)
    assert result.variants["selective_integer"]["integer_compute_fraction"] == 0.0
    assert result.variants["integer_only"]["integer_compute_fraction"] == 1.0
    assert not result.verdicts["selective_integer"].passed
    assert any("counts as float32" in r for r in result.verdicts["selective_integer"].reasons)
    assert result.selected_variant == "integer_only"


def test_a_tiny_eval_split_warns_and_decides_by_the_documented_semantics(tmp_path, trained_digits, digits_quantized):
    examples = write_examples(tmp_path / "ex", rows=digits_rows()[:165])  # 55 eval examples
    result = evaluate.evaluate_models(_eval_dir(examples), trained_digits["float"], digits_quantized,
                                      str(tmp_path / "ev"), _params(), ONE_WORKER)
    assert result.num_eval_examples == 55
    [warning] = result.warnings
    assert "55 examples: too few to resolve max_accuracy_drop 1 pp" in warning and "no variant can pass" in warning
    assert not result.blessed  # upper_bound: no interval on 55 examples is within 1 pp
    assert "too few to resolve" in open(tmp_path / "ev" / "report.html").read()
    figures, float_acc = result.variants, result.float_model["accuracy"]
    lenient = GateSettings(drop_decision="lower_bound")
    for fig in figures.values():
        fig["vs_float"] = gate.comparison(fig["paired_vs_float_model"]["accuracy"], lenient)
    verdicts = gate.judge(figures, float_acc, lenient, chance=result.majority_class_rate)
    assert verdicts["integer_only"]["passed"]  # lower_bound: nothing shows the drop exceeds 1 pp
    point = GateSettings(drop_decision="point")
    assert "one example is 1.82 pp" in gate.resolution_warning(55, float_acc, point)


def test_executor_writes_blessing_and_evaluation(tmp_path, digits_examples, trained_digits, digits_quantized):
    model = standard_artifacts.Model()
    model.uri = trained_digits["model_uri"]
    quantized = standard_artifacts.Model()
    quantized.uri = digits_quantized
    ev = artifact(standard_artifacts.ModelEvaluation, tmp_path / "evaluation")
    blessing = artifact(standard_artifacts.ModelBlessing, tmp_path / "blessing")
    props = {"settings": GateSettings(selection=["qat_int8", "integer_only"], top_k=3, latency_runs=5,
                                      eval_batch_size=128).to_json()}
    Executor().Do({"examples": [digits_examples], "model": [model], "quantized_models": [quantized]},
                  {"evaluation": [ev], "blessing": [blessing]}, props)
    selected = blessing.get_string_custom_property("selected_variant")
    assert blessing.get_int_custom_property("blessed") == 1
    assert os.path.exists(tmp_path / "blessing" / "BLESSED")
    assert selected in ("qat_int8", "integer_only")
    verdicts = json.loads(blessing.get_string_custom_property("verdicts"))
    assert set(verdicts) == set(contracts.read_manifest(digits_quantized).variants)
    metrics = contracts.read_evaluation(ev.uri)
    assert metrics.float_model["top_k"] == 3
    assert ev.get_int_custom_property("selected_size_bytes") == metrics.variants[selected]["size_bytes"]


def test_empty_eval_split_is_a_clear_error(tmp_path, trained_digits, digits_quantized):
    examples = write_examples(tmp_path / "ex", rows=[])
    with pytest.raises(ValueError, match="eval split .* is empty: nothing to evaluate"):
        evaluate.evaluate_models(_eval_dir(examples), trained_digits["float"], digits_quantized,
                                 str(tmp_path / "ev"), _params(), ONE_WORKER)
    assert not os.path.exists(tmp_path / "ev")


def test_labels_outside_the_class_range_fail_the_stage(tmp_path, trained_digits, digits_quantized):
    rows = digits_rows()[:60]
    rows[0]["label"] = 12
    examples = write_examples(tmp_path / "ex", rows=rows)
    with pytest.raises(ValueError, match=r"label 'label' is outside 0..9 \(set num_classes, or fix the labels\): "
                                         r"1 of 20 example\(s\)"):
        evaluate.evaluate_models(_eval_dir(examples), trained_digits["float"], digits_quantized,
                                 str(tmp_path / "ev"), _params(), ONE_WORKER)
    assert not os.path.exists(tmp_path / "ev")


def test_variant_with_a_mismatched_input_spec_fails_with_the_reason(tmp_path, digits_examples, trained_digits,
                                                                    digits_quantized):
    quantized = tmp_path / "q"
    shutil.copytree(digits_quantized, quantized)
    inputs = keras.Input((4, 4, 4), name="image")
    odd = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    converter = tf.lite.TFLiteConverter.from_keras_model(odd)
    (quantized / "float16" / "model.tflite").write_bytes(converter.convert())
    result = evaluate.evaluate_models(_eval_dir(digits_examples), trained_digits["float"], str(quantized),
                                      str(tmp_path / "ev"), _params(), ONE_WORKER)
    reasons = result.verdicts["float16"].reasons
    assert not result.verdicts["float16"].passed
    assert reasons == ["input spec mismatch: the model takes [4, 4, 4], the examples give [8, 8, 1]"]
    assert result.blessed


@pytest.mark.fast
def test_component_validates_the_gate_early():
    from tfx.types import channel_utils

    ch = lambda t: channel_utils.as_channel([t()])  # noqa: E731
    with pytest.raises(ValueError, match=r"selection = \['int4'\]: unknown variant\(s\) \['int4'\]"):
        TFLiteEvaluator(examples=ch(standard_artifacts.Examples), model=ch(standard_artifacts.Model),
                        quantized_models=ch(standard_artifacts.Model), settings=GateSettings.build(selection=["int4"]))
    component = TFLiteEvaluator(examples=ch(standard_artifacts.Examples), model=ch(standard_artifacts.Model),
                                quantized_models=ch(standard_artifacts.Model), settings=GateSettings(max_model_bytes=7))
    assert GateSettings.from_json(component.exec_properties["settings"]).max_model_bytes == 7
    # The deployed baseline's registry is checked as the pusher's is: when built, not after training.
    with pytest.raises(ValueError, match="PushSettings: model_name is empty"):
        TFLiteEvaluator(examples=ch(standard_artifacts.Examples), model=ch(standard_artifacts.Model),
                        quantized_models=ch(standard_artifacts.Model), registry={"destination": "/tmp/registry"})
