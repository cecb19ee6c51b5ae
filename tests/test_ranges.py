"""Activation ranges by method (quantization/ranges.py, issue #31): each method's threshold on a
known histogram against a hand computation; the calibrate-only route (a private TFLite API,
pinned here) quantizes with exactly the ranges written into the calibrated model; the sweep
picks by validation accuracy and keeps min/max when nothing beats it; the quantizer records
the sweep and builds full_integer / integer_only / selective_integer with the chosen ranges,
int16x8 with those of its own 16-bit sweep."""
import math

import numpy as np
import pytest
import tf_keras as keras

from tfx_quantization.contracts import KL, MINMAX, MOVING_AVERAGE, MSE, PERCENTILE
from tfx_quantization.quantization import ranges
from tfx_quantization.settings import QuantizeSettings, SettingsError

# counts [6, 3, 1] on edges 0, 1, 2, 3 (centres 0.5, 1.5, 2.5)
COUNTS3, EDGES3 = np.array([6, 3, 1]), np.array([0.0, 1.0, 2.0, 3.0])


@pytest.mark.fast
def test_percentile_threshold_is_the_right_edge_where_the_cumulative_share_reaches_it():
    # cumulative shares 0.6, 0.9, 1.0
    assert ranges.percentile_threshold(COUNTS3, EDGES3, 50) == 1.0
    assert ranges.percentile_threshold(COUNTS3, EDGES3, 60) == 1.0
    assert ranges.percentile_threshold(COUNTS3, EDGES3, 75) == 2.0
    assert ranges.percentile_threshold(COUNTS3, EDGES3, 99.99) == 3.0


@pytest.mark.fast
def test_mse_threshold_minimizes_the_count_weighted_error_of_the_quantized_bin_centres():
    # levels 5: step T / 4, q(c) = min(round(c / step), 4) * step.
    # T = 1 (step .25): errors 0, .5^2, 1.5^2 -> 6*0 + 3*.25 + 1*2.25 = 3.0
    # T = 2 (step .5):  errors 0, 0, .5^2     -> .25
    # T = 3 (step .75): q = .75, 1.5, 2.25    -> 6*.0625 + 0 + .0625 = .4375
    assert ranges.mse_threshold(COUNTS3, EDGES3, levels=5, start_bin=1) == 2.0
    # from bin 3 on only T = 3 is tried
    assert ranges.mse_threshold(COUNTS3, EDGES3, levels=5, start_bin=3) == 3.0


@pytest.mark.fast
def test_kl_threshold_is_tensorrts_entropy_calibration_by_hand():
    counts, edges = np.array([5, 4, 2, 0, 1]), np.arange(6.0)
    # The zero bin takes its neighbour's count: [4, 4, 2, 0, 1], 11 in all; 2 levels.
    # i=2: P = [4, 4+3]/11, Q = [4, 4]/8
    # i=3: groups [0, 0, 1]: Q = [4, 4, 2]/10, P = [4, 4, 2+1]/11
    # i=4: P holds the tail (1) in bin 3, where Q (groups [0,0,1,1]) is empty: it takes 1e-4 there
    # i=5: groups [0, 0, 0, 1, 1]: Q = [10/3, 10/3, 10/3, 0, 1]/11, P = [4, 4, 2, 0, 1]/11
    def kl(p, q):
        p, q = np.array(p, float) / sum(p), np.array(q, float) / sum(q)
        return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)

    by_hand = {2: kl([4, 7], [4, 4]), 3: kl([4, 4, 3], [4, 4, 2]), 4: kl([4, 4, 2, 1], [4, 4, 2, 1e-4]),
               5: kl([4, 4, 2, 0, 1], [10 / 3, 10 / 3, 10 / 3, 0, 1])}
    best = min(by_hand, key=lambda i: (by_hand[i], -i))
    assert best == 3 and by_hand[3] < by_hand[2] < by_hand[5] < by_hand[4]
    assert ranges.kl_threshold(counts, edges, levels=2, start_bin=2) == edges[best]


@pytest.mark.fast
def test_moving_average_range_and_the_clip_of_a_signed_tensor():
    low, high = ranges.moving_average_range(np.array([0.0, -1.0, -2.0]), np.array([1.0, 3.0, 2.0]), smoothing=0.5)
    assert (low, high) == (-1.25, 2.0)  # low: 0 -> -0.5 -> -1.25; high: 1 -> 2 -> 2
    s = ranges.TensorStats(index=0, name="t", low=-1.0, high=4.0, counts=np.ones(8, np.int64),
                           sample_min=np.array([-1.0]), sample_max=np.array([4.0]))
    assert ranges.clip_range(s, 2.0) == (-1.0, 2.0)
    assert ranges.clip_range(s, 0.5) == (-0.5, 0.5)
    assert ranges.method_range(s, MINMAX) == (-1.0, 4.0)


@pytest.mark.fast
def test_settings_refuse_bad_methods_and_percentiles_in_one_line():
    with pytest.raises(SettingsError, match="listed more than once"):
        QuantizeSettings(calibration_methods=["mse", "mse"])
    with pytest.raises(SettingsError, match="calibration_methods"):
        QuantizeSettings(calibration_methods=["entropy"])
    with pytest.raises(SettingsError, match="calibration_percentile"):
        QuantizeSettings(calibration_percentile=100)
    assert QuantizeSettings(calibration_methods=[]).calibration_methods == []


# ---- a tiny model with an activation outlier ----------------------------------------------
N_FEATURES, HIDDEN, CLASSES = 12, 24, 4


def _outlier_model(outlier: bool):
    """A 1x1 Conv2D(24, relu) -> Dense(4), seeded random weights. With `outlier`, hidden unit 0
    fires only when feature 0 exceeds 0.98 (about 2 % of the inputs), up to 2000, and feeds
    nothing: float predictions do not depend on it, yet its few values set the hidden
    tensor's min/max, so every other unit gets a few int8 steps."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((N_FEATURES,), name="x")
    # A 1x1 convolution: per-channel int8 weights, so the outlier unit's large weight stays its own.
    x = keras.layers.Reshape((1, 1, N_FEATURES))(inputs)
    hidden = keras.layers.Conv2D(HIDDEN, 1, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, name="scores")(keras.layers.Flatten()(hidden)))
    if outlier:
        k, b = model.get_layer("hidden").get_weights()
        k[..., 0], b[0] = 0.0, -0.98e5
        k[0, 0, 0, 0] = 1e5
        model.get_layer("hidden").set_weights([k, b])
        k2, b2 = model.get_layer("scores").get_weights()
        k2[0, :] = 0.0
        model.get_layer("scores").set_weights([k2, b2])
    return model


def _saved(tmp_path, model):
    from tfx_quantization.quantization.model_spec import ModelSpec
    from tfx_quantization.training import save_serving_model

    spec = ModelSpec.single([f"f{i}" for i in range(N_FEATURES)], [N_FEATURES], "label", CLASSES, input_name="x",
                            output_name="scores")
    save_serving_model(model, tmp_path / "model", spec)
    return str(tmp_path / "model"), spec


def _inputs(n, seed):
    return np.random.RandomState(seed).uniform(0, 1, (n, N_FEATURES)).astype(np.float32)


def _calibration(n=200, seed=0):
    x = _inputs(n, seed)
    return lambda: ({"x": x[i:i + 1]} for i in range(n))


def _first_fc_output(model_content):
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_content=model_content)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    fc = [op for op in interpreter._get_ops_details() if op["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    return fc[0]["outputs"][0], names[fc[0]["outputs"][0]]


@pytest.mark.fast
def test_calibrate_only_route_quantizes_with_the_ranges_written(tmp_path):
    """The private route (converter._experimental_calibrate_only, then convert.mlir_quantize,
    as TF 2.16's QuantizationDebugger calls it): a range written into the calibrated model is
    the scale and zero point the int8 model uses. Collected statistics match the calibrator's."""
    import tensorflow as tf

    from tfx_quantization.quantization import selective

    model_dir, spec = _saved(tmp_path, _outlier_model(outlier=False))
    calibration = _calibration(50)
    calibrated, _ = selective.calibrate(model_dir, calibration, spec.signature)
    recorded = ranges.read_ranges(calibrated)
    hidden, hidden_name = _first_fc_output(calibrated)
    assert hidden in recorded and recorded[hidden][0] >= 0  # a ReLU output

    stats = {s.index: s for s in ranges.collect(calibrated, calibration)}
    s = stats[hidden]
    assert (s.low, s.high) == recorded[hidden]
    assert s.counts.sum() == 50 * HIDDEN and len(s.sample_max) == 50
    assert math.isclose(s.sample_max.max(), s.high, rel_tol=1e-6)

    written = ranges.write_ranges(calibrated, {hidden: (0.0, 2.5)})
    assert ranges.read_ranges(written)[hidden] == (0.0, 2.5)
    quantized = ranges.build_variant(written, None)
    details = {t["name"]: t for t in tf.lite.Interpreter(model_content=quantized).get_tensor_details()}
    scale, zero_point = details[hidden_name]["quantization"]
    assert details[hidden_name]["dtype"] == np.int8
    assert math.isclose(scale, 2.5 / 255, rel_tol=1e-5) and zero_point == -128
    with pytest.raises(ValueError, match="min > max"):
        ranges.write_ranges(calibrated, {hidden: (1.0, 0.0)})


@pytest.mark.fast
def test_16x8_route_quantizes_with_the_ranges_written_and_is_the_converters_at_minmax(tmp_path):
    """int16x8's private route (ranges.quantize_16x8: the calibrator's pre-MLIR quantizer, fed
    nothing): a range written into the calibrated model is the 16-bit scale (symmetric, zero
    point 0), and the calibrated model as recorded gives the converter's own int16x8 outputs."""
    import tensorflow as tf

    from tfx_quantization.quantization import convert, selective
    from tfx_quantization.quantization.interpreter import TFLiteRunner

    model_dir, spec = _saved(tmp_path, _outlier_model(outlier=False))
    calibration = _calibration(50)
    calibrated, _ = selective.calibrate(model_dir, calibration, spec.signature)
    hidden, hidden_name = _first_fc_output(calibrated)
    quantized = ranges.build_variant(ranges.write_ranges(calibrated, {hidden: (0.0, 2.5)}), None, "int16")
    details = {t["name"]: t for t in tf.lite.Interpreter(model_content=quantized).get_tensor_details()}
    scale, zero_point = details[hidden_name]["quantization"]
    assert details[hidden_name]["dtype"] == np.int16
    assert math.isclose(scale, 2.5 / 32767, rel_tol=1e-5) and zero_point == 0
    x = {"x": _inputs(200, 5)}
    converter = convert.convert("int16x8", model_dir, calibration, None, signature=spec.signature)
    np.testing.assert_array_equal(TFLiteRunner(ranges.build_variant(calibrated, None, "int16")).predict(x),
                                  TFLiteRunner(converter).predict(x))
    with pytest.raises(ValueError, match="float input and output"):
        ranges.build_variant(calibrated, "int8", "int16")


@pytest.mark.fast
def test_every_integer_variant_with_calibrated_activations_takes_the_sweep_but_qat_int8():
    """One recipe field says it (VariantRecipe.activations / no_range_methods): the int8 PTQ
    variants and selective_integer measured with int8, int16x8 with 16-bit activations;
    qat_int8 keeps the ranges training learned, and says why."""
    from tfx_quantization.quantization import variants

    taking = {n: r.activations for n, r in variants.RECIPES.items() if r.takes_calibration_methods}
    assert taking == {"full_integer": "int8", "integer_only": "int8", "int16x8": "int16", "selective_integer": "int8"}
    assert "learned in quantization-aware training" in variants.recipe("qat_int8").no_range_methods
    # A 16-bit tensor is quantized symmetrically: mse and kl take 2^15 levels either sign.
    assert ranges._levels(True, "int16") == ranges._levels(False, "int16") == 1 << 15


def _sweep(tmp_path, outlier, methods):
    from tfx_quantization.quantization import selective
    from tfx_quantization.quantization.interpreter import TFLiteRunner

    model = _outlier_model(outlier)
    model_dir, spec = _saved(tmp_path, model)
    x_val = _inputs(600, seed=1)
    y_val = np.argmax(model.predict(x_val, verbose=0), -1)  # the float model is right on every example
    calibrated, _ = selective.calibrate(model_dir, _calibration(), spec.signature)
    return ranges.sweep(calibrated, _calibration(), quantize=lambda m: selective.quantize_calibrated(m, [], None),
                        predict=lambda c: TFLiteRunner(c).predict({"x": x_val}), y_val=y_val, float_accuracy=1.0,
                        methods=methods)


@pytest.mark.fast
def test_sweep_picks_the_method_best_on_validation(tmp_path):
    ranged, record = _sweep(tmp_path, outlier=True, methods=[MOVING_AVERAGE, PERCENTILE, MSE, KL])
    by_method = {r.method: r for r in record.methods}
    assert list(by_method) == [MINMAX, MOVING_AVERAGE, PERCENTILE, MSE, KL]
    minmax = by_method[MINMAX].validation_accuracy
    best = max(r.validation_accuracy for r in record.methods)
    assert best - minmax > 0.05, record  # the outlier costs min/max accuracy, clipping wins it back
    assert record.chosen != MINMAX and by_method[record.chosen].validation_accuracy == best
    assert by_method[record.chosen].gain_low > 0 and by_method[record.chosen].tensors_changed >= 1
    assert ranged is not None and ranged != b""
    hidden, _ = _first_fc_output(ranged)
    assert ranges.read_ranges(ranged)[hidden][1] < 100  # the chosen range clips the outlier (up to ~2000)


@pytest.mark.fast
def test_sweep_keeps_minmax_when_no_method_beats_it_beyond_chance(tmp_path):
    ranged, record = _sweep(tmp_path, outlier=False, methods=[PERCENTILE, MSE])
    assert record.chosen == MINMAX and ranged is None
    assert "beyond chance" in record.why
    assert all(r.gain_low is None or r.gain_low <= 0 for r in record.methods)


def test_quantizer_records_the_sweep_and_builds_the_integer_variants_with_the_chosen_ranges(tmp_path):
    from tfx_quantization.contracts import read_manifest
    from tfx_quantization.post_training_quantizer import build
    from tfx_quantization.quantization import data
    from tfx_quantization.quantization.interpreter import TFLiteRunner

    model = _outlier_model(outlier=True)
    model_dir, _ = _saved(tmp_path, model)

    def split(name, x):
        y = np.argmax(model.predict(x, verbose=0), -1)
        rows = ({**{f"f{j}": float(v) for j, v in enumerate(row)}, "label": int(label)} for row, label in zip(x, y))
        return data.write_split(tmp_path / name, (data.to_example(r) for r in rows)), x, y

    calibration_files, _, _ = split("calibration", _inputs(200, 0))
    validation_files, _, _ = split("validation", _inputs(600, 1))
    _, x_test, y_test = split("test", _inputs(600, 2))
    out = tmp_path / "q"
    names = ["float32", "full_integer", "integer_only", "int16x8", "selective_integer"]
    build.quantize_all(model_dir, str(out), QuantizeSettings(variants=names, calibration_methods=[MSE, KL]),
                       calibration_files=calibration_files, validation_files=validation_files)
    manifest = read_manifest(str(out))
    assert sorted(manifest.built()) == sorted(names), {n: v.reason for n, v in manifest.variants.items()}
    sweep = manifest.activation_ranges
    assert sweep is not None and sweep.chosen in (MSE, KL) and sweep.activations == "int8", sweep
    assert sweep.applied_to == ["full_integer", "integer_only", "selective_integer"] and not sweep.not_applied
    assert [m.method for m in sweep.methods] == [MINMAX, MSE, KL]
    for name in ("full_integer", "integer_only", "selective_integer"):
        entry = manifest.variants[name]
        assert entry.status == "ok" and entry.calibration_method == sweep.chosen
    assert manifest.variants["selective_integer"].selective.steps[0].validation_accuracy == pytest.approx(
        next(m for m in sweep.methods if m.method == sweep.chosen).validation_accuracy)  # k = 0: the sweep's model
    assert manifest.variants["integer_only"].inputs[0].dtype == "int8"
    assert manifest.variants["float32"].calibration_method is None
    # int16x8: its own sweep, measured with 16-bit activations (mse and kl for 2^15 levels).
    sweep16 = manifest.activation_ranges_int16
    assert sweep16 is not None and sweep16.activations == "int16" and [m.method for m in sweep16.methods] == [
        MINMAX, MSE, KL] and all(not m.error for m in sweep16.methods), sweep16
    int16 = manifest.variants["int16x8"]
    assert int16.tensor_dtypes["int16"] > 0
    assert (int16.calibration_method, sweep16.applied_to) == ((None, []) if sweep16.chosen == MINMAX
                                                              else (sweep16.chosen, ["int16x8"]))
    # On examples neither the sweep nor calibration saw, the chosen ranges beat min/max.
    ranged = TFLiteRunner(str(out / "full_integer" / "model.tflite")).predict({"x": x_test})
    minmax = next(m for m in sweep.methods if m.method == MINMAX).validation_accuracy
    assert np.mean(np.argmax(ranged, -1) == y_test) > minmax + 0.05
    # The evaluator carries the sweep into metrics.json and the report shows it.
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from tfx_quantization.contracts import read_evaluation
    from tfx_quantization.settings import GateSettings
    from tfx_quantization.tflite_evaluator import evaluate

    evaluate.evaluate_models(str(tmp_path / "test"), model_dir, str(out), str(tmp_path / "ev"),
                             GateSettings(latency_runs=2, latency_warmup=0),
                             lambda: beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"])))
    assert read_evaluation(str(tmp_path / "ev")).activation_ranges.chosen == sweep.chosen
    page = (tmp_path / "ev" / "report.html").read_text()
    section = page[page.index("Activation ranges by method"):page.index('<section id="gate">')]
    assert f"Chosen: <b>{sweep.chosen}</b>" in section and "full_integer, integer_only, selective_integer" in section
    assert f"Chosen: <b>{sweep16.chosen}</b>" in section[section.index("<h3>int16 activations</h3>"):]
    # ... and names each variant's method beside its runtime and weight corrections.
    assert (f'<td class="name">full_integer</td><td class="text">tensorflow-lite</td>\n'
            f'<td class="text">{sweep.chosen}</td>') in page
