"""Float training, then quantization-aware fine-tuning from the float weights.

Plain functions with no TFX imports: the executor and the tests call `train()` directly.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

import components  # noqa: F401
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tensorflow_model_optimization.python.core.quantization.keras import quantize_layer
from tensorflow_model_optimization.python.core.quantization.keras import quantizers as tfmot_quantizers
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_configs
from tf_keras.src.saving import serialization_lib

from components import contracts, fsutil
from components.models import get_builder
from components.quantization import data
from components.quantization.model_spec import LOGITS, ModelSpec
from components.quantization.stats import is_finite
from components.settings import ModelContract, TrainSettings

log = logging.getLogger(__name__)
MAX_SHOWN = 8


@dataclasses.dataclass
class TrainResult:
    spec: ModelSpec
    float_accuracy: float
    qat_accuracy: Optional[float]
    float_layers: List[str]


_UNSUPPORTED_LAYER = re.compile(r"Layer (\S+?):<class")


# Output range only: the layer computes in float, what follows it sees int8 values.
_OUTPUT_ONLY = default_8bit_quantize_configs.Default8BitOutputQuantizeConfig()


def _reads_model_input(model: keras.Model, layer) -> bool:
    """Whether every input of `layer` is a model input."""
    try:
        inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    except (AttributeError, ValueError):  # a layer used at several places has no single input
        return False
    return all(any(t is i for i in model.inputs) for t in inputs)


def _keep_float_inputs(qat: keras.Model, float_input_layers) -> None:
    """Turns off the input quantization tfmot puts before the float layers on the model input:
    their input stays float, as the float model's does (one int8 scale cannot hold raw
    features of different ranges; their outputs carry the range instead)."""
    for layer in qat.layers:
        if not isinstance(layer, quantize_layer.QuantizeLayer):
            continue
        consumers = [n.outbound_layer for n in layer.outbound_nodes]
        if consumers and all(getattr(c, "layer", c).name in float_input_layers for c in consumers):
            layer.quantizer = None


def quantization_aware_copy(model: keras.Model) -> Tuple[keras.Model, List[str]]:
    """A quantization-aware copy of `model` carrying its weights, and the layers left float.

    `quantize_model` when tfmot accepts every layer. Otherwise selective QAT: every layer is
    annotated except the ones tfmot rejects (Normalization, Rescaling, Resizing, Lambda,
    custom layers, ...), which stay float; the rejected set is grown from tfmot's own errors,
    so layers it handles only through its graph transforms (BatchNormalization folded into a
    convolution) are still quantized. A float layer that reads the model input (in-model
    normalization) keeps a float input and gets an output range: the int8 part of the model
    starts after it. Raises ValueError when no layer can be quantized.
    """
    layers = [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]
    if any(isinstance(l, keras.Model) for l in layers):
        raise ValueError(
            "the model nests another model as a layer; tfmot cannot quantize nested models: "
            "build the inner model's layers directly on the outer input (see components/models)"
        )
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    if not any(registry.supports(l) for l in layers):
        raise ValueError(
            f"no layer of model {model.name!r} can be quantized by tfmot; quantization-aware "
            "training needs at least one supported layer (Conv2D, Dense, ...)"
        )
    custom = {type(l).__name__: type(l) for l in layers}
    custom[type(_OUTPUT_ONLY).__name__] = type(_OUTPUT_ONLY)
    reads_input = {l.name for l in layers if _reads_model_input(model, l)}
    left_float: List[str] = []
    for _ in range(len(layers) + 1):
        float_set = set(left_float)

        def annotate(layer):
            # Returning the original layer objects keeps the trained weights;
            # quantize_apply copies them into the quantized model.
            if isinstance(layer, keras.layers.InputLayer):
                return layer
            if layer.name in float_set:
                # A float layer on the model input (a Normalization or Rescaling) computes in
                # float; its output is where int8 starts, so it gets an output range.
                if layer.name in reads_input:
                    return tfmot.quantization.keras.quantize_annotate_layer(layer, _OUTPUT_ONLY)
                return layer
            return tfmot.quantization.keras.quantize_annotate_layer(layer)

        annotated = keras.models.clone_model(model, clone_function=annotate)
        try:
            # tfmot clones the model through Keras serialization, whose safe mode refuses
            # Lambda layers holding Python functions. This is the user's own model, built
            # in this process from their module: allowing it here loads nothing foreign.
            with tfmot.quantization.keras.quantize_scope(custom), serialization_lib.SafeModeScope(False):
                qat = tfmot.quantization.keras.quantize_apply(annotated)
        except RuntimeError as e:
            match = _UNSUPPORTED_LAYER.search(str(e))
            if not match or match.group(1) in float_set:
                raise
            left_float.append(match.group(1))
            continue
        _keep_float_inputs(qat, {n for n in float_set if n in reads_input})
        for layer in qat.layers:
            # quantize_apply sets the weights after building, but preprocessing layers
            # (Normalization) compute what they use from their weights only in
            # finalize_state: without this call an adapted Normalization is an identity.
            getattr(layer, "layer", layer).finalize_state()
        if left_float:
            log.info("Selective QAT: %d layer(s) left float: %s", len(left_float), left_float)
        order = [l.name for l in layers]
        return qat, sorted(left_float, key=order.index)
    raise ValueError(f"could not make model {model.name!r} quantization-aware")


# The quantizers that learn an activation range from the data (the model input's, each
# activation's); weight quantizers (LastValueQuantizer) read the weights themselves.
_RANGE_QUANTIZERS = (tfmot_quantizers.MovingAverageQuantizer, tfmot_quantizers.AllValuesQuantizer)


@contextlib.contextmanager
def _float_forward_recording(ranges: Dict[object, list]) -> Iterator[None]:
    """While active, tfmot's quantizers pass values through unchanged (the model computes in
    float, as the float model does) and the range quantizers record the min and max of what
    they see, by their min variable. tfmot has no hook for this: the quantizer classes'
    __call__ is swapped for the duration and restored after."""
    saved = {cls: cls.__call__ for cls in (*_RANGE_QUANTIZERS, tfmot_quantizers.LastValueQuantizer)}

    def passthrough(self, inputs, training, weights, **kwargs):
        return inputs

    def record(self, inputs, training, weights, **kwargs):
        low, high = weights["min_var"], weights["max_var"]
        axes = list(range(inputs.shape.rank - low.shape.rank))  # per-axis ranges keep the last axis
        lo, hi = tf.reduce_min(inputs, axis=axes).numpy(), tf.reduce_max(inputs, axis=axes).numpy()
        seen = ranges.setdefault(low.ref(), [low, high, lo, hi])
        seen[2], seen[3] = np.minimum(seen[2], lo), np.maximum(seen[3], hi)
        return inputs

    try:
        tfmot_quantizers.LastValueQuantizer.__call__ = passthrough
        for cls in _RANGE_QUANTIZERS:
            cls.__call__ = record
        yield
    finally:
        for cls, call in saved.items():
            cls.__call__ = call


def initialize_quantization_ranges(qat_model: keras.Model, batches: Iterable) -> int:
    """Sets every activation range of a quantization-aware model to the min and max its float
    forward pass reaches on `batches` (model inputs), as post-training calibration does;
    returns how many ranges were set.

    tfmot starts each activation range at [-6, 6] and moves it towards the batch ranges by an
    EMA with decay 0.999: after a fine-tuning of a few hundred steps the ranges are still
    close to [-6, 6] (measured: MobileNetV2-style digits, 2 epochs), so every small activation
    gets a handful of int8 steps and every large one is clipped, and QAT ends below plain
    post-training quantization. Started from the calibrated ranges, fine-tuning adapts the
    weights to the quantization the converted model will have.
    """
    ranges: Dict[object, list] = {}
    with _float_forward_recording(ranges):
        for x in batches:
            qat_model(x, training=False)
    for low, high, lo, hi in ranges.values():
        low.assign(np.minimum(lo, 0.0).astype(np.float32))  # TFLite needs 0 inside every range
        high.assign(np.maximum(hi, 0.0).astype(np.float32))
    return len(ranges)


_TF_DTYPES = {"float32": tf.float32, "int64": tf.int64, "int32": tf.int32}


def model_inputs(model: keras.Model, x: dict, spec: ModelSpec):
    """What `model` takes for the signature inputs `x` (a dict by signature input name):
    the one tensor of a one-input model, else the dict, whose names must be the Keras
    model's input names."""
    if len(model.inputs) == 1 and len(spec.inputs) == 1:
        return x[spec.inputs[0].name]
    names = [t.name.split(":")[0] for t in model.inputs]
    if sorted(names) != sorted(x):
        raise ValueError(f"the Keras model's inputs {names} are not the signature's inputs {sorted(x)}: name the "
                         "keras.Input layers as the signature's inputs")
    return dict(x)


def save_serving_model(model: keras.Model, out_dir: str, spec: ModelSpec) -> None:
    """SavedModel whose signature `spec.signature` takes the spec's inputs by name and returns
    {output_name: scores}; the contract that reads the spec back is recorded next to it
    (model_contract.json)."""
    signature = {i.name: tf.TensorSpec([None, *i.shape], _TF_DTYPES[i.dtype], name=i.name) for i in spec.inputs}

    @tf.function(input_signature=[signature])
    def serve(x):
        return {spec.output_name: model(model_inputs(model, x, spec), training=False)}

    model.save(str(out_dir), save_format="tf", signatures={spec.signature: serve}, include_optimizer=False)
    fsutil.write_bytes_atomic(fsutil.join(str(out_dir), contracts.MODEL_CONTRACT_FILE), ModelContract.of_spec(spec).to_json().encode())


def _compile(model: keras.Model, lr: float, spec: Optional[ModelSpec] = None) -> None:
    """Adam with the loss the model's output calls for: cross-entropy over softmax
    probabilities or logits, or binary cross-entropy for one sigmoid unit."""
    logits = spec is not None and spec.output_kind == LOGITS
    if spec is not None and spec.output_units == 1:
        loss = keras.losses.BinaryCrossentropy(from_logits=logits)
        metric = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if logits else 0.5)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=[metric])


class _ProgressLog(keras.callbacks.Callback):
    def __init__(self, phase: str, epochs: int):
        super().__init__()
        self.phase, self.epochs = phase, epochs

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        log.info(
            "%s epoch %d/%d: loss %.4f accuracy %.4f val_accuracy %.4f", self.phase, epoch + 1,
            self.epochs, logs.get("loss", float("nan")), logs.get("accuracy", float("nan")),
            logs.get("val_accuracy", float("nan")),
        )


def training_datasets(model: keras.Model, train_files: List[str], eval_files: List[str], spec: ModelSpec,
                      cfg: TrainSettings, repeat: bool):
    """(shuffled train, eval) datasets feeding `model` its inputs."""
    def label(y):  # one sigmoid unit: float labels [B, 1]
        return tf.cast(tf.reshape(y, [-1, 1]), tf.float32) if spec.output_units == 1 else y

    def feed(ds):
        return ds.map(lambda x, y: (model_inputs(model, x, spec), label(y)))

    return (feed(data.make_dataset(train_files, spec, cfg.batch_size, shuffle=True, seed=cfg.seed, repeat=repeat)),
            feed(data.make_dataset(eval_files, spec, cfg.batch_size)))


def start_quantization_aware(model: keras.Model, train_files: List[str], spec: ModelSpec,
                             cfg: TrainSettings) -> Tuple[keras.Model, List[str]]:
    """The quantization-aware copy of a trained model, its activation ranges set from
    `cfg.qat_range_batches` train batches; and the layers it leaves float."""
    qat_model, left_float = quantization_aware_copy(model)
    batches = data.make_dataset(train_files, spec, cfg.batch_size, shuffle=True, seed=cfg.seed).take(cfg.qat_range_batches)
    n = initialize_quantization_ranges(qat_model, (model_inputs(qat_model, x, spec) for x, _ in batches))
    log.info("QAT: %d activation range(s) set from %d train batch(es)", n, cfg.qat_range_batches)
    return qat_model, left_float


def fit_phase(m: keras.Model, phase: str, lr: float, epochs: int, steps: int, train_files: List[str],
              eval_files: List[str], spec: ModelSpec, cfg: TrainSettings, log_dir: str) -> float:
    """Compiles, trains and evaluates one phase; returns its eval accuracy."""
    _compile(m, lr, spec)
    train_ds, eval_ds = training_datasets(m, train_files, eval_files, spec, cfg, repeat=bool(steps))
    log.info("%s training of %s for %d epochs", phase, m.name, epochs)
    m.fit(
        train_ds, validation_data=eval_ds, epochs=epochs, steps_per_epoch=steps or None, verbose=0,
        callbacks=[keras.callbacks.TensorBoard(os.path.join(log_dir, phase)), _ProgressLog(phase, epochs)],
    )
    acc = float(m.evaluate(eval_ds, verbose=0, return_dict=True)["accuracy"])
    if not is_finite(acc):
        raise ValueError(f"{phase} training produced a non-finite accuracy ({acc}): lower the learning rate")
    return acc


def adapt_normalization(model: keras.Model, train_files: List[str], spec: ModelSpec, cfg: TrainSettings) -> None:
    """Adapts each Normalization layer that reads a model input directly (and was built
    without a mean and variance) to the train split, before training: the model then takes
    raw features and normalizes them itself."""
    for layer in model.layers:
        if not isinstance(layer, keras.layers.Normalization) or layer.input_mean is not None:
            continue
        [position] = [i for i, t in enumerate(model.inputs) if t is layer.input] or [None]
        if position is None:
            continue
        name = spec.inputs[0].name if len(model.inputs) == 1 else model.inputs[position].name.split(":")[0]
        layer.adapt(data.make_dataset(train_files, spec, cfg.batch_size).map(lambda x, y: x[name]))
        log.info("Normalization layer %s adapted to the train split", layer.name)


def checked_spec(train_files: List[str], eval_files: List[str], spec: ModelSpec) -> ModelSpec:
    """Checks every example of both splits, before any training (a bad value fails here,
    named), and returns the spec with the features' storage dtypes."""
    spec = data.check_examples(train_files, spec)
    eval_spec = data.check_examples(eval_files, spec)
    dtypes = {k: v for i in spec.inputs for k, v in i.feature_dtypes.items()}
    eval_dtypes = {k: v for i in eval_spec.inputs for k, v in i.feature_dtypes.items()}
    differ = sorted(k for k in dtypes if eval_dtypes.get(k) != dtypes[k])
    if differ:
        raise ValueError(f"feature(s) {differ[:MAX_SHOWN]} are stored as int64 in one split and float in the other: "
                         "write them with one type")
    return spec


def train(
    train_dir: str,
    eval_dir: str,
    float_out: str,
    qat_out: Optional[str],
    log_dir: str,
    cfg: TrainSettings,
) -> TrainResult:
    """Trains the float model, then (if qat_out and qat_epochs) a QAT copy from its weights."""
    builder = get_builder(cfg.model, cfg.module_file)
    train_files, eval_files = data.split_files(train_dir), data.split_files(eval_dir)
    spec = checked_spec(train_files, eval_files, cfg.spec())

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    source = cfg.module_file or f"built-in model {cfg.model!r}"
    try:
        model = builder(spec.input_shape, spec.num_classes, spec.input_name, spec.output_name, **cfg.model_kwargs)
    except Exception as e:  # noqa: BLE001 - the user's builder: say where it failed
        raise ValueError(f"build_model of {source} raised {type(e).__name__}: {str(e)[:300]}") from e
    if not isinstance(model, keras.Model):
        raise ValueError(f"build_model of {source} returned {type(model).__name__}, not a tf_keras.Model: return "
                         "a functional tf_keras model (tfmot needs Keras 2, `import tf_keras as keras`)")

    adapt_normalization(model, train_files, spec, cfg)

    def fit(m: keras.Model, phase: str, lr: float, epochs: int, steps: int) -> float:
        return fit_phase(m, phase, lr, epochs, steps, train_files, eval_files, spec, cfg, log_dir)

    float_acc = fit(model, "float", cfg.learning_rate, cfg.epochs, cfg.steps_per_epoch)
    save_serving_model(model, float_out, spec)
    log.info("Float model: eval accuracy %.4f, saved to %s", float_acc, float_out)
    if not qat_out:
        return TrainResult(spec, float_acc, None, [])

    qat_model, left_float = start_quantization_aware(model, train_files, spec, cfg)
    qat_acc = fit(qat_model, "qat", cfg.qat_learning_rate, cfg.qat_epochs, cfg.qat_steps_per_epoch)
    save_serving_model(qat_model, qat_out, spec)
    fsutil.write_json_atomic(fsutil.join(qat_out, contracts.QAT_FLOAT_LAYERS_FILE), left_float)
    log.info("QAT model: eval accuracy %.4f, saved to %s", qat_acc, qat_out)
    return TrainResult(spec, float_acc, qat_acc, left_float)



def load_keras_model(model_dir: str) -> keras.Model:
    """The Keras model in a SavedModel folder (a stock TFX Trainer's Format-Serving), or a
    ValueError saying why it cannot be fine-tuned."""
    try:
        model = keras.models.load_model(model_dir, compile=False)
    except Exception as e:  # noqa: BLE001 - any load failure means the same thing here
        raise ValueError(
            f"the model in {model_dir} cannot be loaded as a tf_keras model ({type(e).__name__}: {str(e)[:300]}): "
            "quantization-aware fine-tuning needs the Keras model; save it in run_fn with tf_keras "
            "(`model.save(fn_args.serving_model_dir, save_format='tf', signatures=...)`)") from None
    if not isinstance(model, keras.Model) or not hasattr(model, "layers"):
        raise ValueError(f"the model in {model_dir} is a {type(model).__name__}, not a tf_keras model: save the "
                         "Keras model in run_fn")
    return model


def fine_tune(
    model_dir: str,
    train_dir: str,
    eval_dir: str,
    qat_out: str,
    log_dir: str,
    cfg: TrainSettings,
    contract: Optional[ModelContract] = None,
) -> TrainResult:
    """Quantization-aware fine-tuning of any Keras model (e.g. a stock TFX Trainer's): loads
    it, checks every example against its signature's contract, makes it quantization-aware
    (layers tfmot cannot quantize stay float), fine-tunes it with the QAT settings of `cfg`
    (qat_epochs, qat_steps_per_epoch, qat_learning_rate, batch_size, seed) and saves it with
    the same signature, so the quantizer treats it as it treats the float model."""
    spec = ModelSpec.read(model_dir, contract)
    train_files, eval_files = data.split_files(train_dir), data.split_files(eval_dir)
    spec = checked_spec(train_files, eval_files, spec)
    # Only the layers between the inputs and the outputs: a run_fn often attaches more to
    # the model (TFX's Transform layer, `model.tft_layer`), which serving uses, not training.
    loaded = load_keras_model(model_dir)
    model = keras.Model(loaded.inputs, loaded.outputs, name=loaded.name)
    units = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    if units != spec.output_units:
        raise ValueError(f"the Keras model in {model_dir} has outputs {[tuple(o.shape) for o in model.outputs]}, "
                         f"signature {spec.signature!r} returns {spec.output_units} scores: fine-tuning needs a model "
                         "with the one class-score output the signature returns")
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    _compile(model, cfg.qat_learning_rate, spec)
    _, eval_ds = training_datasets(model, train_files, eval_files, spec, cfg, repeat=False)
    float_acc = float(model.evaluate(eval_ds, verbose=0, return_dict=True)["accuracy"])
    qat_model, left_float = start_quantization_aware(model, train_files, spec, cfg)
    qat_acc = fit_phase(qat_model, "qat", cfg.qat_learning_rate, cfg.qat_epochs, cfg.qat_steps_per_epoch,
                        train_files, eval_files, spec, cfg, log_dir)
    save_serving_model(qat_model, qat_out, spec)
    fsutil.write_json_atomic(fsutil.join(qat_out, contracts.QAT_FLOAT_LAYERS_FILE), left_float)
    log.info("QAT fine-tuning of %s: eval accuracy %.4f (float %.4f), saved to %s", model_dir, qat_acc, float_acc,
             qat_out)
    return TrainResult(spec, float_acc, qat_acc, left_float)
