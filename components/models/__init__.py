"""Built-in model builders, and loading a user's builder from a module file.

A builder is `build(input_shape, num_classes, input_name, output_name, **kwargs) -> tf_keras.Model`
returning an *uncompiled* functional model with softmax outputs. The trainer compiles it.
For a contract task other than multiclass the trainer also passes `task=` (binary,
multilabel, regression, none): the built-in models then end in sigmoid units or linear ones
(`head_activation`), num_classes being the output's size (none: the input's size, an
autoencoder). For a multi-output contract (contract.extra_outputs) it passes
`extra_outputs={output name: {"units": n, "task": t}}`: the model returns one output per
name, each from a layer of that name (the built-in models: `heads`).
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
from typing import Callable, Dict

import tf_keras as keras

from tfx_quantization import fsutil
from tfx_quantization.contracts import BUILTIN_MODELS

BUILDER_FN = "build_model"
# none: a label-free model, trained to reconstruct its input (linear, the input's size).
HEADS = {"multiclass": "softmax", "binary": "softmax", "multilabel": "sigmoid", "regression": None, "none": None}


def head_activation(task: str) -> str:
    """The output activation of a built-in model for a contract task (binary keeps the
    two-class softmax; None: linear, for regression and a label-free autoencoder)."""
    if task not in HEADS:
        raise ValueError(f"the built-in models cannot be trained for task {task!r}: use one of {sorted(HEADS)}")
    return HEADS[task]


def heads(x, num_classes: int, output_name: str, task: str, extra_outputs=None):
    """The model's output(s) on the shared features `x`: the primary head (num_classes units,
    the task's activation) and, for a multi-output contract, one Dense head per extra
    output ({name: {"units": n, "task": t}}, as the trainer passes them), each layer named
    as its signature output. One tensor for a one-output model, else a list, primary first."""
    primary = keras.layers.Dense(num_classes, activation=head_activation(task), name=output_name)(x)
    if not extra_outputs:
        return primary
    return [primary] + [keras.layers.Dense(o["units"], activation=head_activation(o["task"]), name=name)(x)
                        for name, o in extra_outputs.items()]


def small_cnn(input_shape, num_classes, input_name="image", output_name="probabilities", filters=16,
              task="multiclass", extra_outputs=None):
    """A small CNN for small images ([height, width, channels], e.g. 8x8x1): two 3x3
    convolutions, pooling, a dense softmax head (and one head per extra output: `heads`)."""
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(2 * filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, heads(x, num_classes, output_name, task, extra_outputs), name="small_cnn")


def mobilenet_v2(
    input_shape,
    num_classes,
    input_name="image",
    output_name="probabilities",
    alpha=0.35,
    image_size=32,
    bn_momentum=0.9,
    task="multiclass",
    extra_outputs=None,
):
    """MobileNetV2 (tf_keras.applications, random weights) with a configurable width.

    Inputs smaller than `image_size` are upsampled by an integer factor first (8x8 digits ->
    32x32), so the architecture keeps its real strides. The application's layers are built
    directly on our input, so the model stays flat (tfmot cannot quantize nested models).
    BatchNormalization momentum is 0.9 instead of the application's 0.999: with the
    application's value the moving statistics that inference uses are still far from the
    data after a few hundred steps, and a model trained on digits predicts at chance.
    """
    h, w, c = input_shape
    inputs = keras.Input(shape=(h, w, c), name=input_name)
    x = inputs
    if h < image_size:
        if image_size % h or image_size % w:
            raise ValueError(f"image_size={image_size} must be a multiple of the input size {h}x{w}")
        x = keras.layers.UpSampling2D((image_size // h, image_size // w), name="upsample")(x)
    backbone = keras.applications.MobileNetV2(
        input_tensor=x, alpha=alpha, include_top=False, weights=None, pooling="avg"
    )
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = bn_momentum
    return keras.Model(inputs, heads(backbone.output, num_classes, output_name, task, extra_outputs),
                       name=f"mobilenet_v2_{alpha}")


def tabular_mlp(input_shape, num_classes, input_name="features", output_name="probabilities", units=64,
                task="multiclass", extra_outputs=None):
    """A multilayer perceptron for tabular features that normalizes its input inside the
    graph: Normalization (adapted on the train split by the trainer), two ReLU layers, a
    softmax head. Raw features of very different scales go in, as users feed them."""
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    x = keras.layers.Normalization(name="normalize")(inputs)
    x = keras.layers.Dense(units, activation="relu")(x)
    x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, heads(x, num_classes, output_name, task, extra_outputs), name="tabular_mlp")


BUILTIN: Dict[str, Callable] = {"small_cnn": small_cnn, "mobilenet_v2": mobilenet_v2, "tabular_mlp": tabular_mlp}
# The settings validate model names against contracts.BUILTIN_MODELS without importing Keras.
assert tuple(BUILTIN) == BUILTIN_MODELS, "contracts.BUILTIN_MODELS must list the builders above"


def get_builder(model_name: str = "", module_file: str = "") -> Callable:
    """A built-in builder by name, or `build_model` from a user's module file."""
    if module_file:
        if not fsutil.exists(module_file) or fsutil.isdir(module_file):
            raise ValueError(f"module_file {module_file} does not exist")
        local = module_file
        if fsutil.is_remote(module_file):  # gs:// or s3://: import a local copy
            local = os.path.join(tempfile.mkdtemp(prefix="qp-module-"), os.path.basename(module_file))
            with open(local, "wb") as f:
                f.write(fsutil.read_bytes(module_file))
        spec = importlib.util.spec_from_file_location("user_model_module", local)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - any error in the user's module means the same
            raise ValueError(
                f"module_file {module_file} raised {type(e).__name__} while loading: {str(e)[:300]}; "
                "fix the module (it must import cleanly and define build_model)") from e
        fn = getattr(module, BUILDER_FN, None)
        if not callable(fn):
            raise ValueError(
                f"module_file {module_file} has no function {BUILDER_FN}(input_shape, num_classes, "
                f"input_name, output_name, **kwargs): define it to return a tf_keras.Model"
            )
        return fn
    if model_name not in BUILTIN:
        raise ValueError(
            f"unknown built-in model {model_name!r}: choose one of {sorted(BUILTIN)} or pass module_file"
        )
    return BUILTIN[model_name]
