"""Float training, then quantization-aware fine-tuning from the float weights.

Plain functions with no TFX imports: the executor and the tests call `train()` directly.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import List, Optional, Tuple

import components  # noqa: F401
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tf_keras.src.saving import serialization_lib

from components import contracts, fsutil
from components.models import get_builder
from components.quantization import data
from components.quantization.model_spec import ModelSpec
from components.quantization.stats import is_finite
from components.settings import TrainSettings

log = logging.getLogger(__name__)
MAX_SHOWN = 8


@dataclasses.dataclass
class TrainResult:
    spec: ModelSpec
    float_accuracy: float
    qat_accuracy: Optional[float]
    float_layers: List[str]


_UNSUPPORTED_LAYER = re.compile(r"Layer (\S+?):<class")


def quantization_aware_copy(model: keras.Model) -> Tuple[keras.Model, List[str]]:
    """A quantization-aware copy of `model` carrying its weights, and the layers left float.

    `quantize_model` when tfmot accepts every layer. Otherwise selective QAT: every layer is
    annotated except the ones tfmot rejects (Rescaling, Resizing, Lambda, custom layers,
    ...), which stay float; the rejected set is grown from tfmot's own errors, so layers it
    handles only through its graph transforms (BatchNormalization folded into a
    convolution) are still quantized. Raises ValueError when no layer can be quantized.
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
    left_float: List[str] = []
    for _ in range(len(layers) + 1):
        float_set = set(left_float)

        def annotate(layer):
            # Returning the original layer objects keeps the trained weights;
            # quantize_apply copies them into the quantized model.
            if layer.name in float_set or isinstance(layer, keras.layers.InputLayer):
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
        if left_float:
            log.info("Selective QAT: %d layer(s) left float: %s", len(left_float), left_float)
        order = [l.name for l in layers]
        return qat, sorted(left_float, key=order.index)
    raise ValueError(f"could not make model {model.name!r} quantization-aware")


def save_serving_model(model: keras.Model, out_dir: str, spec: ModelSpec) -> None:
    """SavedModel with a `serving_default` signature: float input -> {output_name: probs}."""
    @tf.function(input_signature=[tf.TensorSpec([None, *spec.input_shape], tf.float32, name=spec.input_name)])
    def serve(x):
        return {spec.output_name: model(x, training=False)}

    model.save(str(out_dir), save_format="tf", signatures={"serving_default": serve}, include_optimizer=False)
    spec.write(out_dir)


def _compile(model: keras.Model, lr: float) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


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
    probe = ModelSpec(cfg.feature_keys, cfg.input_shape, cfg.label_key, cfg.num_classes)
    # Every example of both splits, before any training: a bad value fails here, named.
    dtypes = data.check_examples(train_files, probe.feature_keys, cfg.label_key, probe.values_per_key, cfg.num_classes)
    eval_dtypes = data.check_examples(eval_files, probe.feature_keys, cfg.label_key, probe.values_per_key,
                                      cfg.num_classes)
    differ = sorted(k for k in dtypes if eval_dtypes.get(k) != dtypes[k])
    if differ:
        raise ValueError(f"feature(s) {differ[:MAX_SHOWN]} are stored as int64 in one split and float in the other: "
                         "write them with one type")
    kinds = set(dtypes.values())
    spec = dataclasses.replace(
        probe, feature_dtype=next(iter(kinds)) if len(kinds) == 1 else "float32",
        feature_dtypes=dtypes if len(kinds) > 1 else {}, input_name=cfg.input_name, output_name=cfg.output_name)

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

    def fit(m: keras.Model, phase: str, lr: float, epochs: int, steps: int) -> float:
        """Compiles, trains and evaluates one phase; returns its eval accuracy."""
        _compile(m, lr)
        train_ds = data.make_dataset(train_files, spec, cfg.batch_size, shuffle=True, seed=cfg.seed, repeat=bool(steps))
        eval_ds = data.make_dataset(eval_files, spec, cfg.batch_size)
        log.info("%s training of %s for %d epochs", phase, m.name, epochs)
        m.fit(
            train_ds, validation_data=eval_ds, epochs=epochs, steps_per_epoch=steps or None, verbose=0,
            callbacks=[keras.callbacks.TensorBoard(os.path.join(log_dir, phase)), _ProgressLog(phase, epochs)],
        )
        acc = float(m.evaluate(eval_ds, verbose=0, return_dict=True)["accuracy"])
        if not is_finite(acc):
            raise ValueError(f"{phase} training produced a non-finite accuracy ({acc}): lower the learning rate")
        return acc

    float_acc = fit(model, "float", cfg.learning_rate, cfg.epochs, cfg.steps_per_epoch)
    save_serving_model(model, float_out, spec)
    log.info("Float model: eval accuracy %.4f, saved to %s", float_acc, float_out)
    if not qat_out:
        return TrainResult(spec, float_acc, None, [])

    qat_model, left_float = quantization_aware_copy(model)
    qat_acc = fit(qat_model, "qat", cfg.qat_learning_rate, cfg.qat_epochs, cfg.qat_steps_per_epoch)
    save_serving_model(qat_model, qat_out, dataclasses.replace(spec, float_layers=left_float))
    fsutil.write_json_atomic(fsutil.join(qat_out, contracts.QAT_FLOAT_LAYERS_FILE), left_float)
    log.info("QAT model: eval accuracy %.4f, saved to %s", qat_acc, qat_out)
    return TrainResult(spec, float_acc, qat_acc, left_float)

