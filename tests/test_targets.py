"""Deployment targets: TFLite Micro on the host, arena budgets, per-target selection and
per-target registries. Real TFLM interpreter (PyPI tflite-micro), real variants."""
import json
import os

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from tfx_quantization import contracts
from tfx_quantization.pusher import push
from tfx_quantization.pusher.__main__ import main as pusher_cli
from tfx_quantization.quantization import data, micro
from tfx_quantization.quantization.interpreter import TFLiteRunner
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.registry import open_registry
from tfx_quantization.settings import GateSettings, PushSettings
from tfx_quantization.tflite_evaluator import evaluate

ONE_WORKER = lambda: beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"]))  # noqa: E731


def _variant(quantized_dir, name):
    return open(os.path.join(quantized_dir, name, "model.tflite"), "rb").read()


@pytest.fixture(scope="module")
def eval_inputs(digits_examples, trained_digits):
    files = data.split_files(f"{digits_examples.uri}/Split-eval")
    x, _ = data.parse_numpy(list(data.iter_serialized(files))[:100], data.spec_for(trained_digits["float"], files))
    return x["image"]


def test_tflm_runs_the_integer_variants_and_refuses_hybrid_and_float16_with_the_runtime_reason(
        digits_quantized, eval_inputs):
    results = {}
    for name in ("integer_only", "qat_int8", "full_integer", "float32", "dynamic_range", "float16"):
        content = _variant(digits_quantized, name)
        results[name] = micro.check(content, eval_inputs, TFLiteRunner(content).predict(eval_inputs))
    for name in ("integer_only", "qat_int8", "full_integer", "float32"):
        r = results[name]
        assert r["runs"] and r["arena_bytes"] > 0 and r["examples"] == 100, (name, r)
        assert r["agreement_with_litert"] >= 0.98 and r["max_abs_error"] < 0.1, (name, r)
    assert not results["dynamic_range"]["runs"]
    assert "Hybrid models are not supported on TFLite Micro" in results["dynamic_range"]["reason"]
    assert not results["float16"]["runs"] and "DEQUANTIZE" in results["float16"]["reason"]
    # int8 activations take less arena than float32 ones.
    assert results["integer_only"]["arena_bytes"] < results["float32"]["arena_bytes"]


def _path(quantized_dir, name):
    return os.path.join(quantized_dir, name, "model.tflite")


def test_the_arena_figure_is_the_smallest_that_allocates(digits_quantized):
    path = _path(digits_quantized, "integer_only")
    arena, reason = micro.smallest_arena(path)
    assert reason is None and arena % micro.ARENA_ALIGNMENT == 0
    assert micro.allocates(path, arena) == (True, "")
    ok, why = micro.allocates(path, arena - micro.ARENA_ALIGNMENT)
    assert not ok and "allocate" in why


def test_tflm_outputs_match_litert_on_the_examples(digits_quantized, eval_inputs):
    path = _path(digits_quantized, "integer_only")
    arena, _ = micro.smallest_arena(path)
    outputs = micro.run(path, arena, eval_inputs[:20])
    reference = TFLiteRunner(path).predict(eval_inputs[:20])
    assert outputs.shape == reference.shape == (20, 10)
    assert np.array_equal(outputs.argmax(-1), reference.argmax(-1)) and np.abs(outputs - reference).max() < 0.1


def _targets(mcu_arena_budget):
    return GateSettings(latency_runs=5, latency_warmup=1, device_check_examples=60, targets=[
        {"name": "phone", "runtime": "litert", "selection": ["float16", "integer_only"]},
        {"name": "mcu", "runtime": "tflm", "integer_io": True, "max_arena_bytes": mcu_arena_budget},
        {"name": "edgetpu", "runtime": "litert", "integer_only": True, "integer_io": True},
    ])


@pytest.fixture(scope="module")
def arena(digits_quantized):
    return micro.smallest_arena(_path(digits_quantized, "integer_only"))[0]


@pytest.fixture(scope="module")
def by_target(tmp_path_factory, digits_examples, trained_digits, digits_quantized, arena):
    out = tmp_path_factory.mktemp("targets") / "ev"
    result = evaluate.evaluate_models(f"{digits_examples.uri}/Split-eval", trained_digits["float"], digits_quantized,
                                      str(out), _targets(arena + micro.ARENA_ALIGNMENT), ONE_WORKER)
    return result, str(out)


def test_each_target_selects_its_own_variant(by_target):
    result, out = by_target
    targets = result.targets
    assert targets["phone"].selected == "float16"  # the phone's preference; LiteRT runs float16
    # integer_only and qat_int8 both run within the arena, a few hundred bytes apart: tied in size;
    # the more accurate one ships when it is more than max_accuracy_drop (0.01) better, else the
    # smaller file (gate.select).
    mcu = [n for n, v in targets["mcu"].verdicts.items() if v.passed]
    assert sorted(mcu) == ["integer_only", "qat_int8"] and targets["mcu"].selection.tied == mcu
    accuracy = {n: result.variants[n]["accuracy"] for n in mcu}
    size = {n: result.variants[n]["size_bytes"] for n in mcu}
    better, other = sorted(mcu, key=lambda n: -accuracy[n])
    expected = better if accuracy[better] - accuracy[other] > 0.01 else min(mcu, key=lambda n: size[n])
    assert targets["mcu"].selected == expected, (accuracy, size)
    assert any("does not run on TFLite Micro" in r for r in targets["mcu"].verdicts["float16"].reasons)
    assert any("not int8/uint8" in r for r in targets["mcu"].verdicts["full_integer"].reasons)
    assert any("not integer-only" in r for r in targets["edgetpu"].verdicts["dynamic_range"].reasons)
    assert targets["edgetpu"].selected in ("integer_only", "qat_int8")
    # The first target is the primary one: the blessing follows it.
    assert result.selected_variant == "float16" and result.selection.target == "phone"
    assert result.variants["dynamic_range"]["tflm"]["runs"] is False
    page = open(os.path.join(out, "report.html")).read()
    assert '<section id="targets">' in page and "Hybrid models are not supported" in page
    outcome = json.load(open(os.path.join(out, contracts.OUTCOME_FILE)))
    assert outcome["targets"] == {"phone": "float16", "mcu": targets["mcu"].selected,
                                  "edgetpu": targets["edgetpu"].selected}


def test_an_arena_budget_just_below_the_need_fails_the_variant(tmp_path, digits_examples, trained_digits,
                                                              digits_quantized, arena):
    result = evaluate.evaluate_models(f"{digits_examples.uri}/Split-eval", trained_digits["float"], digits_quantized,
                                      str(tmp_path / "ev"), _targets(arena - micro.ARENA_ALIGNMENT), ONE_WORKER)
    verdict = result.targets["mcu"].verdicts["integer_only"]
    assert not verdict.passed
    assert f"tensor arena {arena} bytes > max_arena_bytes {arena - micro.ARENA_ALIGNMENT}" in verdict.reasons
    assert result.targets["mcu"].selected != "integer_only"


def test_each_target_gets_its_own_registry_and_latest(tmp_path, by_target, digits_quantized, capsys):
    result, out = by_target
    settings = PushSettings(destination=str(tmp_path / "registry"), model_name="digits")
    pushed = push.push_selected(digits_quantized, True, result.selected_variant, settings,
                                evaluation=contracts.read_evaluation(out))
    assert pushed.pushed and pushed.version == 1
    mcu_variant = result.targets["mcu"].selected
    for target, variant in (("phone", "float16"), ("mcu", mcu_variant)):
        registry = open_registry(settings.destination, "digits", target)
        assert registry.latest() == 1 and registry.verify(1) == []
        manifest = registry.manifest(1)
        assert manifest["variant"] == variant and manifest["target"] == target
        assert pushed.targets[target].variant == variant
    mcu_manifest = open_registry(settings.destination, "digits", "mcu").manifest(1)
    assert mcu_manifest["metrics"]["tflm"]["arena_bytes"] == result.variants[mcu_variant]["tflm"]["arena_bytes"]
    # The main registry is unchanged in layout: `list` shows its versions only.
    main = open_registry(settings.destination, "digits")
    assert main.versions() == [1] and main.manifest(1)["variant"] == "float16"
    # A second push of the same decision creates nothing new anywhere.
    again = push.push_selected(digits_quantized, True, result.selected_variant, settings,
                               evaluation=contracts.read_evaluation(out))
    assert not again.pushed and not any(t.created for t in again.targets.values() if t.variant)
    assert pusher_cli(["list", "--destination", settings.destination, "--model-name", "digits",
                       "--target", "mcu"]) == 0
    assert mcu_variant in capsys.readouterr().out
    assert pusher_cli(["list", "--destination", settings.destination, "--model-name", "digits",
                       "--target", "watch"]) == 2
    assert "no target 'watch' for model 'digits'" in (err := capsys.readouterr().err) and "(it has: " in err, err


@pytest.mark.parametrize("targets, message", [
    ([{"name": "cpu", "max_arena_bytes": 1000}], "max_arena_bytes is a TFLite Micro budget: set runtime: tflm"),
    ([{"name": "mcu", "runtime": "tflm", "max_latency_ms": 1}], "max_latency_ms is measured with the LiteRT"),
    ([{"name": "a"}, {"name": "a"}], r"target name\(s\) \['a'\] used more than once"),
    ([{"name": "My MCU"}], "String should match pattern"),
    ([{"name": "x", "runtime": "edgetpu"}], "Input should be 'litert' or 'tflm'"),
    ([{"name": "x", "selection": ["int4"]}], r"unknown variant\(s\) \['int4'\]"),
])
def test_bad_targets_are_refused_with_the_reason(targets, message):
    with pytest.raises(ValueError, match=message):
        GateSettings.build(targets=targets)
