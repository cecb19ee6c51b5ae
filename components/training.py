"""Float training, then quantization-aware fine-tuning from the float weights.

Plain functions with no TFX imports, shared by both training stages: QATTrainer's executor
calls `train()`, QATFineTuner's `fine_tune()`; the tests call them directly. The tfmot
surgery itself (the QAT copy, its starting ranges) is tfx_quantization.quantization.qat.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfx_quantization import contracts, fsutil
from tfx_quantization.models import get_builder
from tfx_quantization.contracts import FLOAT32
from tfx_quantization.quantization import convert, data
from tfx_quantization.quantization.qat import (
    check_copy, initialize_quantization_ranges, nested_model_reason, quantization_aware_copy,
)
from tfx_quantization.model_contract import (
    LOGITS, MULTICLASS, MULTILABEL, NO_LABELS, PROBABILITIES, REGRESSION, ModelContract,
)
from tfx_quantization.quantization.model_spec import ModelSpec, write_contract_file
from tfx_quantization.quantization.stats import is_finite
from tfx_quantization.settings import FineTuneSettings, TrainSettings

log = logging.getLogger(__name__)
MAX_SHOWN = 8


@dataclasses.dataclass
class TrainResult:
    spec: ModelSpec
    float_accuracy: float
    qat_accuracy: Optional[float]
    float_layers: List[str]
    qat_failure: str = ""  # why the QAT copy or its fine-tuning failed ("" when it did not, or was not asked)
    warnings: List[str] = dataclasses.field(default_factory=list)  # also next to the float model


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


QUANT_PREFIX = "quant_"


def output_specs_of(model: keras.Model, spec: ModelSpec) -> List[ModelSpec]:
    """The single-output spec of each of `model`'s outputs, in the model's output order: the
    spec itself for a one-output contract; for a multi-output one (contract.extra_outputs)
    each Keras output is matched by its name (its layer's) to the contract's outputs. A
    ValueError names the outputs that do not match and the fix."""
    if not spec.extra_outputs:
        return [spec]
    by_name = {o.output_name: o for o in spec.output_specs()}
    # tfmot's quantization-aware copy wraps each layer, renaming it 'quant_<name>'.
    names = [n[len(QUANT_PREFIX):] if n.startswith(QUANT_PREFIX) and n not in by_name else n
             for n in model.output_names]
    if sorted(names) != sorted(by_name):
        raise ValueError(f"the Keras model's outputs {names} are not the contract's outputs {spec.output_names} "
                         "(contract.output and extra_outputs): name each output layer as its contract output")
    return [by_name[n] for n in names]


def save_serving_model(model: keras.Model, out_dir: str, spec: ModelSpec) -> None:
    """SavedModel whose signature `spec.signature` takes the spec's inputs by name and returns
    {output_name: scores} (a multi-output contract: every output by its name); the contract
    that reads the spec back is recorded next to it (model_contract.json)."""
    signature = {i.name: tf.TensorSpec([None, *i.shape], _TF_DTYPES[i.dtype], name=i.name) for i in spec.inputs}
    names = [o.output_name for o in output_specs_of(model, spec)]

    @tf.function(input_signature=[signature])
    def serve(x):
        y = model(model_inputs(model, x, spec), training=False)
        return dict(zip(names, y)) if spec.extra_outputs else {spec.output_name: y}

    model.save(str(out_dir), save_format="tf", signatures={spec.signature: serve}, include_optimizer=False)
    write_contract_file(str(out_dir), ModelContract.of_spec(spec))


def metric_name(spec: Optional[ModelSpec], model: Optional[keras.Model] = None) -> str:
    """The Keras metric training reports for the task: 'mae' for regression (and a label-free
    model's reconstruction of its input), else 'accuracy'; for a multi-output `model`, the
    primary output's, as Keras names it ('<Keras output name>_accuracy')."""
    name = "mae" if spec is not None and spec.task in (REGRESSION, NO_LABELS) else "accuracy"
    if spec is None or not spec.extra_outputs or model is None:
        return name
    position = [o.output_name for o in output_specs_of(model, spec)].index(spec.output_name)
    return f"{model.output_names[position]}_{name}"


def reconstruction_problem(spec: ModelSpec) -> str:
    """Why a label-free model (task none) cannot be trained without labels, or '' when it
    can: its one output must have as many values as its one input, which is then the target
    (an autoencoder, a denoiser). The built-in trainer builds such models."""
    sizes = {i.name: i.size for i in spec.inputs}
    if len(spec.inputs) == 1 and spec.inputs[0].size == spec.output_units:
        return ""
    return (f"task none: without labels, training reconstructs the model's input, but output {spec.output_name!r} "
            f"has {spec.output_units} values and the inputs {sizes}: only one input of the output's size can be the "
            "target (give the model a task with a label to fine-tune it)")


def _compile(model: keras.Model, lr: float, spec: Optional[ModelSpec] = None) -> None:
    """Adam with the loss the task calls for (_task_loss); a multi-output model: each
    output's task's loss and metric, by output name, summed with equal weights."""
    if spec is not None and spec.extra_outputs:  # in the model's output order (training_datasets' labels)
        losses = [_task_loss(o) for o in output_specs_of(model, spec)]
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=[loss for loss, _ in losses],
                      metrics=[[metric] for _, metric in losses])
        return
    loss, metric = _task_loss(spec)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss, metrics=[metric])


def _task_loss(spec: Optional[ModelSpec]):
    """(loss, metric) of one output's task: mean squared error (regression; task none: the
    reconstruction of the input), binary cross-entropy for independent sigmoids (multilabel)
    or one sigmoid unit, else cross-entropy over softmax probabilities or logits."""
    logits = spec is not None and spec.output_kind == LOGITS
    if spec is not None and spec.task in (REGRESSION, NO_LABELS):
        loss, metric = keras.losses.MeanSquaredError(), keras.metrics.MeanAbsoluteError(name="mae")
    elif spec is not None and spec.task == MULTILABEL:
        loss = keras.losses.BinaryCrossentropy(from_logits=logits)
        metric = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if logits else spec.threshold)
    elif spec is not None and spec.output_units == 1:
        loss = keras.losses.BinaryCrossentropy(from_logits=logits)
        metric = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if logits else 0.5)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    return loss, metric


LOG_PROBABILITIES = "log-probabilities"
OUTPUT_TOLERANCE = 1e-3


def output_kind_of(y: np.ndarray, units: int) -> str:
    """What a batch of raw outputs [B, units] holds: PROBABILITIES (every value in [0, 1] and,
    over several units, rows summing to 1), LOG_PROBABILITIES (values <= 0 whose exponentials
    sum to 1 per row) or LOGITS (anything else)."""
    y = np.asarray(y, np.float64)
    tol = OUTPUT_TOLERANCE
    in_unit = bool(np.all(y >= -tol) and np.all(y <= 1 + tol))
    if units == 1:
        return PROBABILITIES if in_unit else LOGITS
    if in_unit and np.max(np.abs(y.sum(-1) - 1)) <= tol:
        return PROBABILITIES
    if np.all(y <= tol) and np.max(np.abs(np.exp(y).sum(-1) - 1)) <= tol:
        return LOG_PROBABILITIES
    return LOGITS


def check_output_kind(model: keras.Model, x, spec: ModelSpec, source: str) -> str:
    """Runs `model` on one batch of inputs and checks its output against the declared
    contract.output_kind (spec.output_kind); returns what the batch holds. A ValueError names
    the output and the fix when they contradict: probabilities declared, logits or
    log-probabilities seen (training would use a probabilities loss on them and learn little,
    silently); logits declared, probabilities seen (a softmax applied twice)."""
    y = model(x, training=False)
    if spec.extra_outputs:  # the primary output's values
        y = y[[o.output_name for o in output_specs_of(model, spec)].index(spec.output_name)]
    y = y.numpy()
    if not spec.is_classifier:  # regression's values are any real; multilabel's are judged per unit
        if spec.task != MULTILABEL:
            return LOGITS
        y = y.reshape(-1, 1)
    seen = output_kind_of(y, 1 if spec.task == MULTILABEL else spec.output_units)
    shown = f"values in [{float(np.min(y)):.3g}, {float(np.max(y)):.3g}]"
    if spec.output_units > 1 and spec.is_classifier:
        sums = y.sum(-1)
        shown += f", rows summing to {float(np.min(sums)):.3g}..{float(np.max(sums)):.3g}"
    where = f"output {spec.output_name!r} of {source}"
    if spec.output_kind == PROBABILITIES and seen != PROBABILITIES:
        raise ValueError(f"{where} is declared probabilities (contract.output_kind), but on the first train batch it "
                         f"holds {seen} ({shown}): set contract.output_kind to 'logits' (log-probabilities train as "
                         "logits too), or end the model with a softmax (sigmoid for one unit)")
    if spec.output_kind == LOGITS and seen == PROBABILITIES and spec.output_units > 1:
        raise ValueError(f"{where} is declared logits (contract.output_kind), but on the first train batch it holds "
                         f"probabilities ({shown}): set contract.output_kind to 'probabilities', or remove the final "
                         "softmax")
    return seen


# A first epoch whose loss changes by less than this share did not train.
STALL_TOLERANCE = 0.01


class _FirstEpochLoss(keras.callbacks.Callback):
    """Keeps the first epoch's batch losses (Keras logs their running mean). It takes the
    logs as tensors and reads them after the epoch: no per-batch sync slows training."""

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True
        self._losses: list = []
        self.means: List[float] = []
        self.done = False

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if not self.done and loss is not None:
            self._losses.append(loss)

    def on_epoch_end(self, epoch, logs=None):
        if not self.done:
            self.means = [float(v) for v in self._losses]
            self._losses, self.done = [], True


def loss_stalled(running_means: List[float], phase: str) -> Optional[str]:
    """A warning when the first epoch's loss did not move: the mean loss of its last quarter
    of batches within STALL_TOLERANCE of its first quarter's, or within two standard errors
    of the batch-to-batch noise (per-batch losses recovered from Keras's running means)."""
    n = len(running_means)
    if n < 8:
        return None
    losses = np.array([running_means[0]] + [(k + 1) * running_means[k] - k * running_means[k - 1]
                                            for k in range(1, n)])
    q = n // 4
    head, tail = losses[:q], losses[-q:]
    first, last = float(np.mean(head)), float(np.mean(tail))
    noise = 2 * float(np.sqrt((np.var(head, ddof=1) + np.var(tail, ddof=1)) / q))
    if not (is_finite(first) and is_finite(last)) or abs(first - last) > max(STALL_TOLERANCE * abs(first), noise):
        return None
    return (f"the {phase} training loss did not move in the first epoch ({first:.4f} over its first batches, "
            f"{last:.4f} over its last): the model learns nothing; check the learning rate, the labels and "
            "contract.output_kind")


class _ProgressLog(keras.callbacks.Callback):
    def __init__(self, phase: str, epochs: int, metric: str = "accuracy"):
        super().__init__()
        self.phase, self.epochs, self.metric = phase, epochs, metric

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        log.info(
            "%s epoch %d/%d: loss %.4f %s %.4f val_%s %.4f", self.phase, epoch + 1,
            self.epochs, logs.get("loss", float("nan")), self.metric, logs.get(self.metric, float("nan")),
            self.metric, logs.get(f"val_{self.metric}", float("nan")),
        )


def training_datasets(model: keras.Model, train_files: List[str], eval_files: List[str], spec: ModelSpec,
                      cfg: FineTuneSettings, repeat: bool):
    """(shuffled train, eval) datasets feeding `model` its inputs and the task's targets (task
    none: the input itself, flattened to the output's [B, units]; reconstruction_problem)."""
    problem = reconstruction_problem(spec) if spec.task == NO_LABELS else ""
    if problem:
        raise ValueError(problem)

    def label(y, o: ModelSpec):  # one sigmoid unit: float [B, 1]; multilabel: float multi-hot; regression: as parsed
        if o.task == MULTILABEL:
            return tf.cast(y, tf.float32)
        return tf.cast(tf.reshape(y, [-1, 1]), tf.float32) if o.is_classifier and o.output_units == 1 else y

    multi = bool(spec.extra_outputs)
    if multi:
        unlabelled = [o.output_name for o in spec.output_specs() if not o.has_labels]
        if unlabelled:
            raise ValueError(f"output(s) {unlabelled} have no label (task none): a multi-output model trains every "
                             "output on its label; train it yourself (a stock TFX Trainer) and give its contract to "
                             "the evaluator")
        specs = output_specs_of(model, spec)

    def feed(ds):
        if multi:  # each output's labels, in the model's output order
            return ds.map(lambda x, y: (model_inputs(model, x, spec),
                                        tuple(label(y[o.output_name], o) for o in specs)))
        if spec.task == NO_LABELS:  # the target is the input, flattened to the output's [B, units]
            name, units = spec.inputs[0].name, spec.output_units
            return ds.map(lambda x, y: (model_inputs(model, x, spec),
                                        tf.reshape(tf.cast(x[name], tf.float32), [-1, units])))
        return ds.map(lambda x, y: (model_inputs(model, x, spec), label(y, spec)))

    return (feed(data.make_dataset(train_files, spec, cfg.batch_size, shuffle=True, seed=cfg.seed, repeat=repeat,
                                   all_labels=multi)),
            feed(data.make_dataset(eval_files, spec, cfg.batch_size, all_labels=multi)))


def first_batch(model: keras.Model, files: List[str], spec: ModelSpec, cfg: FineTuneSettings):
    """The inputs `model` takes for the first batch of `files`."""
    x, _ = next(iter(data.make_dataset(files, spec, cfg.batch_size).take(1)))
    return model_inputs(model, x, spec)


def scores_of(model: keras.Model, spec: ModelSpec):
    """raw outputs of `model` (one array, or a list for a multi-output model) -> what its
    outputs' tasks compare (ModelSpec.scores), every output's flattened side by side [B, ...]."""
    specs = output_specs_of(model, spec)
    if len(specs) == 1:
        return spec.scores

    def scores(outputs):
        return np.concatenate([o.scores(np.asarray(v)).reshape(len(v), -1) for o, v in zip(specs, outputs)], axis=1)

    return scores


def start_quantization_aware(model: keras.Model, train_files: List[str], spec: ModelSpec,
                             cfg: FineTuneSettings) -> Tuple[keras.Model, List[str]]:
    """The quantization-aware copy of a trained model, checked to compute the float model's
    function on a train batch with its quantizers passed through (qat.check_copy: a
    QATCopyMismatch otherwise), its activation ranges set from `cfg.qat_range_batches` train
    batches; and the layers it leaves float."""
    qat_model, left_float = quantization_aware_copy(model)
    diff = check_copy(model, qat_model, first_batch(model, train_files, spec, cfg), scores_of(model, spec))
    log.info("QAT: the copy matches the float model on a train batch (max probability difference %.2g)", diff)
    batches = data.make_dataset(train_files, spec, cfg.batch_size, shuffle=True, seed=cfg.seed).take(cfg.qat_range_batches)
    n = initialize_quantization_ranges(qat_model, (model_inputs(qat_model, x, spec) for x, _ in batches))
    log.info("QAT: %d activation range(s) set from %d train batch(es)", n, cfg.qat_range_batches)
    return qat_model, left_float


def fit_phase(m: keras.Model, phase: str, lr: float, epochs: int, steps: int, train_files: List[str],
              eval_files: List[str], spec: ModelSpec, cfg: FineTuneSettings, log_dir: str,
              warnings: Optional[List[str]] = None) -> float:
    """Compiles, trains and evaluates one phase; returns its eval figure (metric_name: the
    accuracy, or a regression's MAE). With `warnings`
    (training from scratch; a fine-tuning may rightly start converged), a first epoch whose
    loss did not move is logged and appended to it."""
    _compile(m, lr, spec)
    train_ds, eval_ds = training_datasets(m, train_files, eval_files, spec, cfg, repeat=bool(steps))
    log.info("%s training of %s for %d epochs", phase, m.name, epochs)
    first_epoch = _FirstEpochLoss()
    callbacks = [keras.callbacks.TensorBoard(os.path.join(log_dir, phase)),
                 _ProgressLog(phase, epochs, metric_name(spec, m))]
    m.fit(train_ds, validation_data=eval_ds, epochs=epochs, steps_per_epoch=steps or None, verbose=0,
          callbacks=callbacks + ([first_epoch] if warnings is not None else []))
    stalled = loss_stalled(first_epoch.means, phase) if warnings is not None else None
    if stalled:
        log.warning("%s", stalled)
        warnings.append(stalled)
    acc = float(m.evaluate(eval_ds, verbose=0, return_dict=True)[metric_name(spec, m)])
    if not is_finite(acc):
        raise ValueError(f"{phase} training produced a non-finite {metric_name(spec, m)} ({acc}): lower the "
                         "learning rate")
    return acc


def quantization_aware_phase(model: keras.Model, qat_out: str, train_files: List[str], eval_files: List[str],
                             spec: ModelSpec, cfg: FineTuneSettings,
                             log_dir: str) -> Tuple[Optional[float], List[str], str]:
    """The optional QAT path: the checked copy of `model`, its fine-tuning, its SavedModel in
    `qat_out`. Returns (eval accuracy, layers left float, ''), or (None, [], reason) when any
    of it fails (tfmot cannot rebuild the model, the copy computes another function, the
    fine-tuning diverges): the reason is recorded in `qat_out` (contracts.write_qat_failure) and the
    run goes on with the float model."""
    try:
        qat_model, left_float = start_quantization_aware(model, train_files, spec, cfg)
        qat_acc = fit_phase(qat_model, "qat", cfg.qat_learning_rate, cfg.qat_epochs, cfg.qat_steps_per_epoch,
                            train_files, eval_files, spec, cfg, log_dir)
        save_serving_model(qat_model, qat_out, spec)
        fsutil.write_json_atomic(fsutil.join(qat_out, contracts.QAT_FLOAT_LAYERS_FILE), left_float)
    except Exception as e:  # noqa: BLE001 - an optional path: recorded, the rest of the run goes on
        reason = convert.one_line(e)
        log.warning("QAT failed, so the QAT variants will be recorded as failed; the float model goes on: %s", reason)
        contracts.write_qat_failure(qat_out, reason)
        return None, [], reason
    return qat_acc, left_float, ""


def adapt_normalization(model: keras.Model, train_files: List[str], spec: ModelSpec, cfg: FineTuneSettings) -> None:
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


def start_at_the_label_mean(model: keras.Model, train_files: List[str], spec: ModelSpec) -> bool:
    """A regression head that is a linear Dense layer starts with its bias at the training
    labels' mean (the usual initialisation: the model starts as the trivial predictor instead
    of at 0, so a target around 150 does not cost the first epochs). Whether it did."""
    started = False
    for o in output_specs_of(model, spec):  # a multi-output model: each regression head, by its name
        head = model.get_layer(o.output_name) if spec.extra_outputs else model.layers[-1]
        if o.task != REGRESSION or not isinstance(head, keras.layers.Dense) or not head.use_bias \
                or head.activation is not keras.activations.linear:
            continue
        kernel, bias = head.get_weights()
        head.set_weights([kernel, np.asarray(data.label_mean(train_files, o), bias.dtype).reshape(bias.shape)])
        log.info("Regression head %s starts at the training labels' mean %s", head.name, head.get_weights()[1])
        started |= o.output_name == spec.output_name
    return started


def qat_blocked_before_training(model: keras.Model, qat_out: Optional[str]) -> str:
    """What stops quantization-aware training that the untrained model already shows (it
    nests a model as a layer: qat.nested_model_reason), recorded in `qat_out` before any
    epoch is spent (contracts.write_qat_failure; the quantizer records the QAT variants as
    failed with it and warns) and returned; '' when nothing does or no QAT is asked for."""
    reason = nested_model_reason(model) if qat_out else ""
    if reason:
        log.warning("QAT cannot run, so the QAT variants will be recorded as failed; the float model goes on: %s",
                    reason)
        contracts.write_qat_failure(qat_out, reason)
    return reason


def check_converts(model: keras.Model, spec: ModelSpec, source: str) -> None:
    """Converts the freshly built model (untrained: a second or two) with the float32 recipe,
    as the quantizer will convert the trained one, so a model TFLite cannot take stops
    before any epoch is spent: a ValueError with the converter's reason in one line and the
    fix (convert.failure_reason)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_serving_model(model, tmp, spec)
        try:
            convert.convert(FLOAT32, tmp, signature=spec.signature)
        except Exception as e:  # noqa: BLE001 - any converter failure means the same here
            raise ValueError(f"the model of {source} does not convert to TFLite (checked before training, untrained): "
                             f"{convert.failure_reason(e)}") from None


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
    contract: ModelContract,
) -> TrainResult:
    """Trains the float model, then (if qat_out) a QAT copy from its weights.

    contract: what the model takes and predicts (ModelSpec.of_contract: one input with its
    features and shape, the label key, num_classes; a ValueError names what is missing).
    Both SavedModels record the resolved contract next to them; TrainResult.spec is it."""
    builder = get_builder(cfg.model, cfg.module_file)
    train_files, eval_files = data.split_files(train_dir), data.split_files(eval_dir)
    spec = checked_spec(train_files, eval_files, ModelSpec.of_contract(contract))

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    source = f"module_file {cfg.module_file}" if cfg.module_file else f"built-in model {cfg.model!r}"
    try:
        # A task other than multiclass is passed on (the built-in models pick their head by it).
        task = {} if spec.task == MULTICLASS else {"task": spec.task}
        if spec.extra_outputs:  # a multi-output contract: one head per extra output, named as it
            task["extra_outputs"] = {o.output_name: {"units": o.num_classes, "task": o.task} for o in spec.extra_outputs}
        model = builder(spec.input_shape, spec.num_classes, spec.input_name, spec.output_name, **task,
                        **cfg.model_kwargs)
    except Exception as e:  # noqa: BLE001 - the user's builder: say where it failed
        raise ValueError(f"build_model of {source} raised {type(e).__name__}: {str(e)[:300]}") from e
    if not isinstance(model, keras.Model):
        raise ValueError(f"build_model of {source} returned {type(model).__name__}, not a tf_keras.Model: return "
                         "a functional tf_keras model (tfmot needs Keras 2, `import tf_keras as keras`)")
    output_specs_of(model, spec)  # a multi-output contract: the model's outputs are its outputs, by name

    adapt_normalization(model, train_files, spec, cfg)
    # The built-in models' regression head starts at the label mean; its first epoch then
    # moves little by design (no first-epoch stall check: the gate's sanity bound, beating
    # the training mean, tells whether it learned).
    at_mean = not cfg.module_file and start_at_the_label_mean(model, train_files, spec)
    check_output_kind(model, first_batch(model, train_files, spec, cfg), spec, source)
    qat_blocked = qat_blocked_before_training(model, qat_out)
    check_converts(model, spec, source)

    warnings: List[str] = []
    float_acc = fit_phase(model, "float", cfg.learning_rate, cfg.epochs, cfg.steps_per_epoch, train_files, eval_files,
                          spec, cfg, log_dir, None if at_mean else warnings)
    save_serving_model(model, float_out, spec)
    contracts.write_training_warnings(float_out, warnings)
    log.info("Float model: eval %s %.4f, saved to %s", metric_name(spec), float_acc, float_out)
    if not qat_out or qat_blocked:
        return TrainResult(spec, float_acc, None, [], qat_failure=qat_blocked, warnings=warnings)

    qat_acc, left_float, failure = quantization_aware_phase(model, qat_out, train_files, eval_files, spec, cfg,
                                                            log_dir)
    if not failure:
        log.info("QAT model: eval %s %.4f, saved to %s", metric_name(spec), qat_acc, qat_out)
    return TrainResult(spec, float_acc, qat_acc, left_float, qat_failure=failure, warnings=warnings)



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
    cfg: FineTuneSettings,
    contract: Optional[ModelContract] = None,
) -> TrainResult:
    """Quantization-aware fine-tuning of any Keras model (e.g. a stock TFX Trainer's): loads
    it, checks every example against its signature under `contract` (None: the one recorded
    next to the model; ModelSpec.read names the fix when there is none), makes it
    quantization-aware (layers tfmot cannot quantize stay float), fine-tunes it with `cfg`
    and saves it with the same signature and the resolved contract, so the quantizer treats
    it as it treats the float model."""
    spec = ModelSpec.read(model_dir, contract)
    train_files, eval_files = data.split_files(train_dir), data.split_files(eval_dir)
    spec = checked_spec(train_files, eval_files, spec)
    # Only the layers between the inputs and the outputs: a run_fn often attaches more to
    # the model (TFX's Transform layer, `model.tft_layer`), which serving uses, not training.
    loaded = load_keras_model(model_dir)
    model = keras.Model(loaded.inputs, loaded.outputs, name=loaded.name)
    units = model.outputs[0].shape[-1] if len(model.outputs) == 1 else None
    if spec.extra_outputs:  # a multi-output contract: the Keras outputs are matched by name
        output_specs_of(model, spec)
    elif units != spec.output_units:
        raise ValueError(f"the Keras model in {model_dir} has outputs {[tuple(o.shape) for o in model.outputs]}, "
                         f"signature {spec.signature!r} returns {spec.output_units} scores: fine-tuning needs a model "
                         "with the one class-score output the signature returns")
    reason = reconstruction_problem(spec) if spec.task == NO_LABELS else ""
    if reason:
        log.warning("QAT fine-tuning cannot run, so the QAT variants will be recorded as failed: %s", reason)
        contracts.write_qat_failure(qat_out, reason)
        return TrainResult(spec, float("nan"), None, [], qat_failure=reason)
    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    _compile(model, cfg.qat_learning_rate, spec)
    check_output_kind(model, first_batch(model, train_files, spec, cfg), spec, f"the model in {model_dir}")
    _, eval_ds = training_datasets(model, train_files, eval_files, spec, cfg, repeat=False)
    float_acc = float(model.evaluate(eval_ds, verbose=0, return_dict=True)[metric_name(spec, model)])
    qat_acc, left_float, failure = quantization_aware_phase(model, qat_out, train_files, eval_files, spec, cfg,
                                                            log_dir)
    if not failure:
        log.info("QAT fine-tuning of %s: eval accuracy %.4f (float %.4f), saved to %s", model_dir, qat_acc, float_acc,
                 qat_out)
    return TrainResult(spec, float_acc, qat_acc, left_float, qat_failure=failure)
