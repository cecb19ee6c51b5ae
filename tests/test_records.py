"""The records that cross stages (contracts.py): each round-trips through its one writer and
reader, a missing or garbled file is one line naming it, files of older runs still read; the
manifest's converter settings are what the converter was configured with; "deployed" comes
from the push result's boolean, never from its sentence."""
import json
import math
import re

import pytest

from tfx_quantization import contracts
from tfx_quantization.contracts import (
    ConverterSettings, Decision, DeployedShift, Evaluation, LayerError, Manifest, PushResult, RecordError, RunOutcome,
    SearchBudget, SearchStep, SelectiveSearch, Selection, TargetDecision, TargetPush, TensorInfo, VariantEntry, Verdict,
)

FAST = pytest.mark.fast
SETTINGS = ConverterSettings(optimizations=["DEFAULT"], supported_ops=["TFLITE_BUILTINS_INT8"], supported_types=[],
                             representative_dataset=True, inference_input_type="int8", inference_output_type="int8")
TENSOR = {"name": "serving_default_image:0", "dtype": "int8", "shape": [-1, 8, 8, 1],
          "quantization": {"scale": 0.0039, "zero_point": -128}}


def _manifest() -> Manifest:
    step = SearchStep(num_float_layers=0, float_layers=[], validation_accuracy=0.5, accuracy_drop=0.4, passed=False)
    search = SelectiveSearch(
        ranking_metric="rmse_over_scale", input_scaling_ops=[], steps=[step], float_accuracy_on_validation=0.9,
        layer_errors=[LayerError(tensor_name="dense", op_name="FULLY_CONNECTED", mean_squared_error=0.0, scale=0.0,
                                 rmse_over_scale=math.inf, max_abs_error=0.0)],
        budget=SearchBudget(max_drop=0.01, max_float_layers=8, max_steps=8), num_validation_examples=400)
    search.float_layers, search.best_step = None, step
    built = VariantEntry(
        name="integer_only", status="ok", reason="", source_model="model", converter_settings=SETTINGS,
        device_class="Edge TPU", file="integer_only/model.tflite", size_bytes=1234, sha256="ab" * 32,
        integer_compute_fraction=1.0, inputs=[TensorInfo(**TENSOR)], outputs=[TensorInfo(**TENSOR)],
        op_counts={"FULLY_CONNECTED": 1}, num_ops=1, float_ops={}, tensor_dtypes={"int8": 3})
    built.size_ratio_to_float32 = 0.26
    failed = VariantEntry(name="selective_integer", status="failed", reason="no model within the budget passed",
                          source_model="model", device_class="CPU", selective=search,
                          converter_settings=SETTINGS.model_copy(update={"denylisted_nodes": "see selective"}))
    return Manifest(variants={"integer_only": built, "selective_integer": failed}, model_spec={"signature": "s"},
                    integer_io_type="int8", tensorflow_version="2.16.2", created_at="2026-01-01T00:00:00+00:00",
                    sources={"float_model": "/m", "qat_model": ""}, calibration={"files": ["c"], "max_samples": None},
                    validation={"files": [], "max_samples": 1000}, settings={"variants": []})


def _evaluation() -> Evaluation:
    figures = {"accuracy": 0.97, "size_bytes": 1234, "vs_float": {"drop": 0.0, "low": -0.01, "high": 0.01}}
    verdict = Verdict(passed=True, reasons=["all bounds hold"])
    return Evaluation(
        blessed=True, selected_variant="integer_only", metric="accuracy",
        selection=Selection(policy="smallest", why="smallest passing variant (1234 bytes)", target="mcu"),
        float_model={"accuracy": 0.97, "top_k": 3}, majority_class_rate=0.1, variants={"integer_only": figures},
        verdicts={"integer_only": verdict},
        targets={"mcu": TargetDecision(settings={"name": "mcu"}, selected="integer_only", verdicts={"integer_only": verdict},
                                       selection=Selection(policy="fastest", why="w", fastest="a", tied=["a"], noise_ms=0.1))},
        warnings=["w"], deployed_shift=DeployedShift(version="2", recorded=0.99, now=0.97, fall=0.02, flagged=True),
        baseline={"accuracy": 0.97, "version": "2"}, history=[{"version": 1}], settings={"max_accuracy_drop": 0.01},
        host={"note": "n"}, num_eval_examples=599, created_at="2026-01-01T00:00:00+00:00",
        manifest={"integer_only": {"status": "ok", "reason": "", "file": "integer_only/model.tflite",
                                   "size_bytes": 1234, "sha256": "ab" * 32}})


FILES = {  # record -> (an example, its writer, its reader, its file)
    "manifest": (_manifest, contracts.write_manifest, contracts.read_manifest, contracts.MANIFEST_FILE),
    "evaluation": (_evaluation, contracts.write_evaluation, contracts.read_evaluation, contracts.METRICS_FILE),
    "decision": (lambda: Decision(blessed=True, selected_variant="a", why=["a: smallest"], targets={"mcu": None},
                                  selected_metrics={"accuracy": 0.9}),
                 contracts.write_decision, contracts.read_decision, contracts.OUTCOME_FILE),
    "run outcome": (lambda: RunOutcome(blessed=True, pushed=False, deployed=True, push_reason="r", report="/r.html"),
                    contracts.write_run_outcome, contracts.read_run_outcome, contracts.OUTCOME_FILE),
}


@FAST
@pytest.mark.parametrize("name", FILES)
def test_each_record_round_trips_through_its_writer_and_reader(tmp_path, name):
    make, write, read, file_name = FILES[name]
    record = make()
    write(tmp_path, record)
    again = read(str(tmp_path))
    assert type(again) is type(record) and again == record
    # What the file holds is what was set, and it survives a second round trip byte for byte.
    first = (tmp_path / file_name).read_bytes()
    write(tmp_path, again)
    assert (tmp_path / file_name).read_bytes() == first


@FAST
def test_the_manifest_keeps_its_keys_on_disk(tmp_path):
    contracts.write_manifest(tmp_path, _manifest())
    on_disk = json.loads((tmp_path / contracts.MANIFEST_FILE).read_text())
    ok, failed = on_disk["variants"]["integer_only"], on_disk["variants"]["selective_integer"]
    assert ok["converter_settings"]["inference_input_type"] == "int8" and "denylisted_nodes" not in ok["converter_settings"]
    assert ok["inputs"][0]["quantization"] == {"scale": 0.0039, "zero_point": -128} and "selective" not in ok
    assert "file" not in failed and "inputs" not in failed  # a failed variant records no file
    assert failed["selective"]["float_layers"] is None and failed["selective"]["best_step"]["passed"] is False
    assert "integer_compute_fraction" not in failed["selective"]
    assert math.isinf(failed["selective"]["layer_errors"][0]["rmse_over_scale"])


@FAST
@pytest.mark.parametrize("name", FILES)
def test_a_missing_or_garbled_file_is_one_line_naming_it(tmp_path, name):
    make, write, read, file_name = FILES[name]
    path = tmp_path / file_name
    named = re.escape(str(path))
    with pytest.raises(RecordError, match=f"^{named} is missing: {re.escape(str(tmp_path))} is not ") as missing:
        read(str(tmp_path))
    path.write_text('{"variants": {')
    with pytest.raises(RecordError, match=f"^{named} is not JSON ") as garbled:
        read(str(tmp_path))
    path.write_text(json.dumps({"blessed": "perhaps", "variants": {"a": {"status": "built"}}}))
    with pytest.raises(RecordError, match=f"^{named} is not a {type(make()).__name__} record \\(") as wrong:
        read(str(tmp_path))
    for error in (missing, garbled, wrong):
        assert "\n" not in str(error.value)


@FAST
def test_a_manifest_of_the_first_quantizer_reads(tmp_path):
    """The shape the PostTrainingQuantizer wrote before it had a validation split, settings or
    the integer-compute fraction (with the integer_op_fraction it had then)."""
    entry = {"name": "float32", "source_model": "model", "device_class": "reference; any CPU", "status": "ok",
             "reason": "", "file": "float32/model.tflite", "size_bytes": 9, "sha256": "cd" * 32,
             "integer_op_fraction": 0.0, "inputs": [dict(TENSOR, dtype="float32")], "outputs": [],
             "op_counts": {}, "num_ops": 0, "float_ops": {}, "tensor_dtypes": {},
             "converter_settings": {"optimizations": [], "supported_ops": ["TFLITE_BUILTINS"], "supported_types": [],
                                    "representative_dataset": False, "inference_input_type": "float32",
                                    "inference_output_type": "float32"}}
    (tmp_path / contracts.MANIFEST_FILE).write_text(json.dumps({
        "variants": {"float32": entry}, "model_spec": {}, "integer_io_type": "int8", "tensorflow_version": "2.15.0",
        "created_at": "2025-11-22T03:03:10+00:00", "sources": {"float_model": "/m", "qat_model": ""},
        "calibration": {"files": [], "max_samples": None}}))
    manifest = contracts.read_manifest(str(tmp_path))
    assert manifest.built() == ["float32"] and manifest.variants["float32"].integer_compute_fraction is None
    assert contracts.variant_path(str(tmp_path), manifest, "float32") == str(tmp_path / "float32" / "model.tflite")
    with pytest.raises(ValueError, match=r"variant 'int8' is not a built variant of .* \(built: \['float32'\]\)"):
        contracts.variant_path(str(tmp_path), manifest, "int8")


def _properties(result: PushResult) -> dict:
    """The PushedModel's properties as ML Metadata returns them (JSON values as strings)."""
    return {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v
            for k, v in contracts.push_result_properties(result).items()}


@FAST
def test_the_push_result_round_trips_through_the_artifact_properties():
    results = [
        PushResult(pushed=True, reason="pushed a as version 3", version=3, deployed_version_dir="/r/m/3",
                   targets={"mcu": TargetPush(variant="a", version=1, created=True, version_dir="/r/m/targets/mcu/1"),
                            "tpu": TargetPush(variant=None, reason="no variant passed")}),
        PushResult(pushed=False, already_deployed=True, reason="nothing new", version=3, deployed_version_dir="/r/m/3"),
        PushResult(pushed=False, reason="the evaluation did not bless any variant", deployed_version_dir=""),
    ]
    for result in results:
        again = contracts.read_push_result(_properties(result))
        assert again.model_dump() == result.model_dump()
    assert _properties(results[1])[contracts.ALREADY_DEPLOYED] == 1
    # A PushedModel from a run before the boolean: blessed and already there when a version is named.
    old = {k: v for k, v in _properties(results[1]).items() if k != contracts.ALREADY_DEPLOYED}
    assert contracts.read_push_result(old).already_deployed
    with pytest.raises(RecordError, match="^the PushedModel's properties are not a push result: there is no 'pushed'"):
        contracts.read_push_result({contracts.REASON: "x"})
    with pytest.raises(RecordError, match="^the PushedModel's properties are not a push result: 'pushed_targets' is not"):
        contracts.read_push_result(dict(_properties(results[0]), pushed_targets="{not json"))
    with pytest.raises(RecordError, match=r"^the PushedModel's properties are not a push result \(targets\.mcu\.version"):
        contracts.read_push_result(dict(_properties(results[0]), pushed_targets='{"mcu": {"version": "one"}}'))


def _quantized_dir(tmp_path, content: bytes):
    """A quantizer output with one built variant (the registry checks bytes, not TFLite)."""
    (tmp_path / "q" / "integer_only").mkdir(parents=True)
    (tmp_path / "q" / "integer_only" / contracts.MODEL_FILE).write_bytes(content)
    entry = _manifest().variants["integer_only"].model_copy(update={"size_bytes": len(content)})
    contracts.write_manifest(tmp_path / "q", Manifest(variants={"integer_only": entry}))
    return str(tmp_path / "q")


def _store_with(tmp_path, decision: Decision, push_properties: dict) -> str:
    """An ML Metadata store holding a ModelEvaluation (its outcome.json) and a PushedModel."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx.types import standard_artifacts

    from tfx_quantization.tfx_utils import set_properties

    tmp_path.mkdir(parents=True)
    path = str(tmp_path / "metadata.sqlite")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    contracts.write_decision(tmp_path / "ev", decision)
    evaluation, pushed = standard_artifacts.ModelEvaluation(), standard_artifacts.PushedModel()
    evaluation.uri, pushed.uri = str(tmp_path / "ev"), str(tmp_path / "pushed")
    set_properties(pushed, push_properties)
    for artifact in (evaluation, pushed):
        artifact.type_id = store.put_artifact_type(artifact.artifact_type)
        store.put_artifacts([artifact.mlmd_artifact])
    return path


@FAST
def test_deployed_follows_the_already_deployed_boolean_not_the_reason(tmp_path):
    from tfx_quantization.pipeline import outcome
    from tfx_quantization.pusher import push
    from tfx_quantization.settings import PushSettings

    quantized = _quantized_dir(tmp_path, b"the same bytes")
    settings = PushSettings(destination=str(tmp_path / "registry"), model_name="m")
    first = push.push_selected(quantized, True, "integer_only", settings)
    again = push.push_selected(quantized, True, "integer_only", settings)
    assert first.pushed and not first.already_deployed
    assert not again.pushed and again.already_deployed and again.version == first.version == 1

    blessed = Decision(blessed=True, selected_variant="integer_only")
    properties = contracts.push_result_properties(again.model_copy(update={"reason": "nothing to do"}))
    result = outcome.run_outcome(_store_with(tmp_path / "a", blessed, properties))
    assert result.deployed and not result.pushed and result.push_reason == "nothing to do"
    assert result.deployed_version_dir == again.deployed_version_dir == str(tmp_path / "registry" / "m" / "1")
    # A reason that says "already holds" without the boolean is not deployed.
    not_there = PushResult(pushed=False, reason="version 1 already holds the same model (sha256)")
    result = outcome.run_outcome(_store_with(tmp_path / "b", blessed, contracts.push_result_properties(not_there)))
    assert not result.deployed
    # Not blessed: nothing this run decided is deployed, whatever the registry holds.
    result = outcome.run_outcome(_store_with(tmp_path / "c", Decision(blessed=False), properties))
    assert not result.deployed


def _tiny_saved_model(path):
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 1), name="image")
    x = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, activation="relu")(inputs))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probabilities")(x)).save(str(path))
    return str(path)


def _configured(converter) -> dict:
    """What a real TFLiteConverter is configured with, in the manifest's vocabulary."""
    import tensorflow as tf

    return {
        "optimizations": sorted(o.name for o in converter.optimizations),
        "supported_ops": sorted(o.name for o in converter.target_spec.supported_ops),
        "supported_types": sorted(tf.as_dtype(t).name for t in converter.target_spec.supported_types),
        "representative_dataset": converter.representative_dataset is not None,
        "inference_input_type": tf.as_dtype(converter.inference_input_type).name,
        "inference_output_type": tf.as_dtype(converter.inference_output_type).name,
    }


@pytest.mark.parametrize("io_type", ["int8", "uint8"])
def test_the_manifest_settings_are_what_the_converter_was_configured_with(tmp_path, io_type):
    import numpy as np

    from tfx_quantization.quantization import convert, selective, variants

    model = _tiny_saved_model(tmp_path / "model")
    calibration = lambda: iter([[np.zeros((1, 4, 4, 1), np.float32)]])  # noqa: E731
    for name, recipe in variants.RECIPES.items():
        settings = recipe.converter_settings(io_type)
        if recipe.backend == variants.SELECTIVE_SEARCH:  # the search's converter: float I/O, calibrated
            converter = selective._converter(model, calibration, "serving_default")
            settings = recipe.converter_settings(None)
        else:
            converter = convert.configure(settings, model, calibration)
        expected = settings.model_dump(exclude={"denylisted_nodes", "litert_recipe"})  # not converter attributes
        assert _configured(converter) == {k: sorted(v) if isinstance(v, list) else v for k, v in expected.items()}, name
    # The table holds each fact once: the sets the quantizer used to keep beside it.
    assert {n for n, r in variants.RECIPES.items() if r.needs_calibration} == {
        "full_integer", "integer_only", "int16x8", "selective_integer"}
    assert {n for n, r in variants.RECIPES.items() if r.takes_calibration and not r.needs_calibration} == {"qat_int8"}
    assert {n for n, r in variants.RECIPES.items() if r.needs_qat_model} == {"qat_int8", "qat_mixed"}
    assert {n for n, r in variants.RECIPES.items() if r.integer_only} == {"integer_only", "qat_int8"}
