"""Weight-side corrections before conversion (cross-layer equalization, empirical bias
correction) and the int4 variants through LiteRT Quantizer, on tiny tf_keras models that
train nothing (issue #31)."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tfx_quantization.quantization import convert, weight_corrections as wc

RNG_SEED = 3


def _imbalanced_chain():
    """conv -> BN -> ReLU -> depthwise -> ReLU -> conv -> max pool -> flatten -> dense(relu)
    -> dense, with random BN statistics, whose output channels were made wildly uneven
    without changing the function (channel i of a producer times f_i, the consumer's input
    channel i over f_i)."""
    keras.utils.set_random_seed(RNG_SEED)
    x = inputs = keras.Input((8, 8, 2), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv_a")(x)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw_b")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_c")(x)
    x = keras.layers.MaxPooling2D(2, name="pool_c")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(8, activation="relu", name="dense_d")(x)
    outputs = keras.layers.Dense(3, name="dense_e")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.RandomState(RNG_SEED)
    bn = model.get_layer("bn_a")
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(0, 0.3, 6), rng.normal(0, 0.5, 6), rng.uniform(0.2, 3, 6)])
    # conv_a (through the BN's gamma/beta) -> dw_b: make dw_b's channels uneven by f.
    f = np.logspace(-2, 2, 6)
    dw = model.get_layer("dw_b")
    kernel, bias = dw.get_weights()
    dw.set_weights([kernel * f[None, None, :, None], bias * f])
    conv_c = model.get_layer("conv_c")
    ck, cb = conv_c.get_weights()
    conv_c.set_weights([ck / f[None, None, :, None], cb])
    return model


def _ranges_out(layer, bn=None):
    r = np.abs(wc.out_columns(layer, wc._kernel(layer))).max(axis=0)
    return r * np.abs(wc._bn_factor(bn)) if bn is not None else r


@pytest.mark.fast
def test_equalization_keeps_the_float_outputs_and_evens_the_channel_ranges():
    model = _imbalanced_chain()
    x = np.random.RandomState(0).uniform(-1, 1, (32, 8, 8, 2)).astype(np.float32)
    before = model(x).numpy()
    dw_before = _ranges_out(model.get_layer("dw_b"))
    pairs, skipped, sweeps = wc.equalize(model)
    after = model(x).numpy()
    assert np.max(np.abs(after - before)) <= 1e-4 * np.max(np.abs(before))
    assert [(p.producer, p.consumer) for p in pairs] == [
        ("conv_a", "dw_b"), ("dw_b", "conv_c"), ("conv_c", "dense_d"), ("dense_d", "dense_e")]
    assert pairs[0].through == ["bn_a", "relu_a"] and pairs[2].through == ["pool_c", "flat"]
    assert not skipped and 1 <= sweeps < wc.MAX_ROUNDS
    # Each pair's channels end up balanced: producer output channel i spans what the
    # consumer's input channel i spans (sqrt(r1 * r2)), at convergence.
    for producer in ("conv_a", "dw_b", "conv_c", "dense_d"):
        pair, _ = wc._pair_from(model, model.get_layer(producer))
        np.testing.assert_allclose(pair.producer_ranges(), pair.consumer_ranges(), rtol=1e-3)
    # dw_b's per-channel ranges spread over four decades before, far less after.
    dw_after = _ranges_out(model.get_layer("dw_b"))
    assert dw_before.min() / dw_before.max() < 1e-3
    assert dw_after.min() / dw_after.max() > 30 * dw_before.min() / dw_before.max()
    assert pairs[1].producer_range_ratio_after > pairs[1].producer_range_ratio_before


@pytest.mark.fast
def test_a_pair_through_relu6_is_skipped_and_left_unchanged():
    keras.utils.set_random_seed(RNG_SEED)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.ReLU(6.0, name="relu6")(x)
    outputs = keras.layers.Conv2D(3, 3, name="conv_b")(x)
    model = keras.Model(inputs, outputs)
    weights = [w.copy() for w in model.get_weights()]
    pairs, skipped, _ = wc.equalize(model)
    assert pairs == [] and [(s.producer, s.consumer) for s in skipped] == [("conv_a", "conv_b")]
    assert "ReLU6" in skipped[0].reason
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))


def _int8(w, axis_out, per_tensor=False):
    """Hand quantization: int8, symmetric, narrow range, one scale per output channel (or one)."""
    moved = np.moveaxis(w.astype(np.float64), axis_out, -1)
    scale = np.abs(moved.reshape(-1, moved.shape[-1])).max(axis=0) / 127
    scale = np.full_like(scale, scale.max()) if per_tensor else scale
    return np.moveaxis(np.clip(np.round(moved / scale), -127, 127) * scale, -1, axis_out)


def _weight_quantized_twin(model):
    """The model with its Conv2D / Dense weights quantized by hand (Dense per tensor, as TF
    2.16's converter does; a BN folded first, as the converter folds it, then unfolded to keep
    the graph)."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    for layer in twin.layers:
        if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
            continue
        kernel = layer.kernel.numpy()
        nxt = layer._outbound_nodes[0].outbound_layer if layer._outbound_nodes else None
        if isinstance(nxt, keras.layers.BatchNormalization):
            factor = nxt.gamma.numpy() / np.sqrt(nxt.moving_variance.numpy() + nxt.epsilon)
            layer.kernel.assign(_int8(kernel * factor, -1) / factor)
        else:
            layer.kernel.assign(_int8(kernel, -1, per_tensor=isinstance(layer, keras.layers.Dense)))
    return twin


def _pre_activations(model):
    """The outputs before each nonlinearity: the BN after the first conv, the second conv, the head."""
    names = ("bn_a", "conv_b", "head")
    return keras.Model(model.inputs, [model.get_layer(n).output for n in names])


def _mean_channel_errors(reference, model, x):
    """Per pre-activation output: the largest absolute per-channel mean of (the model with
    hand-quantized weights - the float reference), over the batch and positions."""
    twin = _weight_quantized_twin(model)
    ref, quant = _pre_activations(reference)(x), _pre_activations(twin)(x)
    return [np.abs((q.numpy() - r.numpy()).reshape(-1, r.shape[-1]).mean(axis=0)).max() for r, q in zip(ref, quant)]


@pytest.mark.fast
def test_after_bias_correction_the_mean_output_error_per_channel_is_about_zero():
    keras.utils.set_random_seed(RNG_SEED)
    rng = np.random.RandomState(RNG_SEED)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn_a")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, name="conv_b")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5, name="head")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("bn_a").set_weights([rng.uniform(0.5, 2, 8), rng.normal(0, 0.3, 8), rng.normal(0, 0.2, 8),
                                         rng.uniform(0.2, 2, 8)])
    # An outlier weight per output channel: coarse int8 steps, so the rounding error shows.
    for name in ("conv_a", "conv_b", "head"):
        layer = model.get_layer(name)
        k = layer.kernel.numpy()
        flat = k.reshape(-1, k.shape[-1])
        flat[0] = 20 * np.abs(flat).max(axis=0)
        layer.kernel.assign(flat.reshape(k.shape))
    # Inputs with a non-zero mean: a rounding error W_q - W then shifts each channel's mean.
    calib = rng.uniform(0, 1, (96, 6, 6, 3)).astype(np.float32)
    original = keras.models.clone_model(model)
    original.set_weights(model.get_weights())
    before = _mean_channel_errors(original, model, calib)
    corrected, skipped = wc.correct_biases(model, [calib[:48], calib[48:]])
    after = _mean_channel_errors(original, model, calib)  # the int8-weight model vs the float model as trained
    assert [c.layer for c in corrected] == ["conv_a", "conv_b", "head"] and not skipped
    assert corrected[0].folded_batch_norm == "bn_a"
    for b, a in zip(before, after):
        assert b > 1e-3  # a visible mean error before ...
        assert a < 1e-3 * b + 1e-6  # ... about zero after


@pytest.mark.fast
def test_the_weight_simulation_is_the_converters_int8_scheme(tmp_path):
    """quantize_weights gives the values the converter's full-integer model holds for Conv2D,
    DepthwiseConv2D (a scale per output channel) and Dense (one scale), read back from the .tflite."""
    keras.utils.set_random_seed(RNG_SEED)
    inputs = keras.Input((6, 6, 2), name="image")
    x = keras.layers.Conv2D(5, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="dw")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, name="dense")(x)
    model = keras.Model(inputs, outputs)
    model.save(str(tmp_path / "m"), save_format="tf")
    rng = np.random.RandomState(0)

    def calibration():
        for _ in range(8):
            yield {"image": rng.uniform(-1, 1, (1, 6, 6, 2)).astype(np.float32)}

    content = convert.convert(convert.FULL_INTEGER, str(tmp_path / "m"), calibration)
    interpreter = tf.lite.Interpreter(model_content=content)
    int8 = [t for t in interpreter.get_tensor_details()
            if t["dtype"] == np.int8 and len(t["shape"]) in (2, 4) and t["quantization_parameters"]["scales"].size]
    by_shape = {tuple(t["shape"]): t for t in int8}
    expected = {  # the layer and its weights as TFLite lays them out
        "conv": (5, 3, 3, 2), "dw": (1, 3, 3, 10), "dense": (4, 2 * 2 * 10)}
    for name, shape in expected.items():
        layer = model.get_layer(name)
        t = by_shape[shape]
        scales = t["quantization_parameters"]["scales"]
        axis = t["quantization_parameters"]["quantized_dimension"]
        q = interpreter.get_tensor(t["index"]).astype(np.float64)
        values = q * np.expand_dims(scales, tuple(i for i in range(q.ndim) if i != axis))
        sim = wc.quantize_weights(layer, wc._kernel(layer))
        if name == "conv":
            sim = np.transpose(sim, (3, 0, 1, 2))
        elif name == "dw":
            sim = sim.reshape(1, 3, 3, 10)
        else:
            sim = sim.T
        assert scales.size == (1 if name == "dense" else shape[axis]), f"{name}: {scales.size} scale(s)"
        np.testing.assert_allclose(values, sim, rtol=0, atol=1e-6 * np.abs(sim).max())


def _linear_workload(root):
    """A float model that classifies its own data perfectly (labels = its argmax), saved
    with a contract, and calibration and eval splits: nothing is trained."""
    from tfx_quantization.quantization import data
    from tfx_quantization.quantization.model_spec import ModelSpec
    from tfx_quantization.training import save_serving_model

    keras.utils.set_random_seed(RNG_SEED)
    inputs = keras.Input((64,), name="features")
    hidden = keras.layers.Dense(128, activation="relu", name="hidden")(inputs)
    outputs = keras.layers.Dense(4, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(inputs, outputs)
    spec = ModelSpec.single(["features"], [64], "label", 4, input_name="features")
    save_serving_model(model, root / "model", spec)
    rng = np.random.RandomState(RNG_SEED)
    x = rng.normal(0, 1, (400, 64)).astype(np.float32)
    y = np.argmax(model(x).numpy(), axis=-1)
    examples = [tf.train.Example(features=tf.train.Features(feature={
        "features": tf.train.Feature(float_list=tf.train.FloatList(value=row)),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))})) for row, label in zip(x, y)]
    data.write_split(root / "cal" / "Split-calibration", examples[:100], shards=1)
    data.write_split(root / "examples" / "Split-eval", examples[100:], shards=1)
    return (str(root / "model"), data.split_files(root / "cal" / "Split-calibration"),
            str(root / "examples" / "Split-eval"))


def test_an_int4_variant_is_built_runs_and_is_gated(tmp_path):
    """int4_weights (LiteRT Quantizer, per-channel 4-bit weights) and int4_blockwise through
    build.quantize_all (with the weight corrections on, which full_integer alone takes),
    validated, then measured and judged by the evaluator like any
    variant; the gate's size bound refuses it when the file is over budget."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from tfx_quantization.post_training_quantizer import build
    from tfx_quantization.quantization import data
    from tfx_quantization.quantization.interpreter import TFLiteRunner, accuracy
    from tfx_quantization.quantization.model_spec import ModelSpec
    from tfx_quantization.settings import GateSettings, QuantizeSettings
    from tfx_quantization.tflite_evaluator import evaluate, gate

    model_dir, calibration_files, eval_dir = _linear_workload(tmp_path)
    names = ["float32", "full_integer", "int4_weights", "int4_blockwise"]
    # With both weight corrections on: full_integer converts from the corrected model, the int4
    # variants (not int8 weights) from the model as trained.
    settings = QuantizeSettings(variants=names, cross_layer_equalization=True, bias_correction=True)
    manifest = build.quantize_all(model_dir, str(tmp_path / "q"), settings,
                                  calibration_files=calibration_files)
    assert manifest.built() == names, {n: v.reason for n, v in manifest.variants.items()}
    corrections = manifest.weight_corrections
    assert corrections.applied == ["cross_layer_equalization", "bias_correction"], corrections.not_applied
    assert [(p.producer, p.consumer) for p in corrections.equalized_pairs] == [("hidden", "probabilities")]
    assert corrections.output_change <= build.EQUALIZATION_TOLERANCE and len(corrections.corrected_layers) == 2
    assert manifest.variants["full_integer"].weight_corrections == corrections.applied
    assert all(manifest.variants[n].weight_corrections is None for n in ("float32", "int4_weights", "int4_blockwise"))
    int4 = manifest.variants["int4_weights"]
    assert int4.converter_settings.litert_recipe == "dynamic_wi4_afp32"
    # TF 2.16's interpreter computes 4-bit weights wrongly without an error: LiteRT's runs them.
    assert int4.runtime == "ai-edge-litert" and manifest.variants["full_integer"].runtime == "tensorflow-lite"
    assert manifest.variants["int4_blockwise"].converter_settings.litert_recipe == "dynamic_wi4b32_afp32"
    # 4 bits a weight: well under the int8 file (8,192 of the 8,708 weights are in the first layer).
    assert int4.size_bytes < 0.7 * manifest.variants["full_integer"].size_bytes
    # Counted by their flatbuffer type (INT4), which TF 2.16's interpreter reports as int8.
    for name in ("int4_weights", "int4_blockwise"):
        dtypes = manifest.variants[name].tensor_dtypes
        assert dtypes["int4"] == 2 and "int8" not in dtypes, (name, dtypes)

    # Device targets: TFLite Micro refuses 4-bit weights with float activations, in its own words, and
    # an Edge TPU-style target (integer-only, integer I/O) refuses their float compute; the run goes on.
    targets = [{"name": "mcu", "runtime": "tflm"}, {"name": "edgetpu", "integer_only": True, "integer_io": True}]
    result = evaluate.evaluate_models(
        eval_dir, model_dir, str(tmp_path / "q"), str(tmp_path / "ev"),
        GateSettings(latency_runs=5, latency_warmup=1, max_accuracy_drop=0.05, drop_decision="point",
                     targets=targets, device_check_examples=50),
        lambda: beam.Pipeline(options=PipelineOptions(["--direct_num_workers=1"])))
    for name in ("int4_weights", "int4_blockwise"):
        micro = result.variants[name]["tflm"]
        assert not micro["runs"] and "filter type: INT4 not supported" in micro["reason"], micro
        mcu, edgetpu = (result.targets[t].verdicts[name] for t in ("mcu", "edgetpu"))
        assert not mcu.passed and any(r.startswith("does not run on TFLite Micro") for r in mcu.reasons), mcu
        assert not edgetpu.passed and any("not integer-only" in r for r in edgetpu.reasons), edgetpu
    assert result.variants["full_integer"]["tflm"]["runs"]
    # The report names each variant's runtime and the weight corrections of the model it came from.
    page = (tmp_path / "ev" / "report.html").read_text()
    for name, runtime, corrections in (("int4_weights", "ai-edge-litert", "none"),
                                       ("int4_blockwise", "ai-edge-litert", "none"),
                                       ("full_integer", "tensorflow-lite", "cross_layer_equalization, bias_correction")):
        assert (f'<td class="name">{name}</td><td class="text">{runtime}</td>\n<td class="text">–</td>\n'
                f'<td class="text">{corrections}</td>') in page, name
    spec = ModelSpec.read(model_dir)
    x, y = data.parse_numpy(list(data.iter_serialized(data.split_files(eval_dir))), spec)
    for name in ("int4_weights", "int4_blockwise"):
        fig = result.variants[name]
        runner = TFLiteRunner.for_spec(str(tmp_path / "q" / name / "model.tflite"), spec)
        assert fig["accuracy"] == pytest.approx(accuracy(runner.predict(x), y)), name
        assert fig["accuracy"] > 0.8, name  # 4-bit weights, yet close to the float model's 1.0
        assert name in result.verdicts
    fig = result.variants["int4_weights"]
    assert result.verdicts["int4_weights"].passed == (result.float_model["accuracy"] - fig["accuracy"] <= 0.05 + 1e-9)
    tight = GateSettings(max_model_bytes=int4.size_bytes - 1, drop_decision="point", max_accuracy_drop=0.05)
    verdict = gate.judge({"int4_weights": fig}, result.float_model["accuracy"], tight,
                         chance=result.majority_class_rate)["int4_weights"]
    assert not verdict["passed"] and any("size" in r for r in verdict["reasons"]), verdict
