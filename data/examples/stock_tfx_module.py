"""The user module of the stock-TFX example pipeline (pipeline/stock.py): what a platform
team's existing pipeline already has, a Transform `preprocessing_fn` and a Trainer
`run_fn`, written the way TFX's own examples write them. Nothing here knows about
quantization; the quantization stages only need the dense signature it exports.

    preprocessing_fn: the 64 digit pixel columns -> one float feature `pixels` [64], scaled
                      to 0..1 with the train split's min and max (tft.scale_to_0_1); the
                      label passes through.
    run_fn:           a small tf_keras CNN over `pixels`, trained on the transformed
                      examples; it outputs logits. It exports two signatures:
                        serving_default  serialized raw tf.Examples -> logits (parsing +
                                         the Transform graph: what a server calls)
                        dense            {"pixels": float [None, 64]} -> {"logits"}
                                         (what TFLite converts: set contract.signature)
"""
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras  # Keras 2: tfmot (quantization-aware training) needs it
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx_bsl.public import tfxio

PIXEL_KEYS = [f"pixel_{i:02d}" for i in range(64)]
LABEL_KEY = "label"
FEATURE = "pixels"


def preprocessing_fn(inputs):
    pixels = tf.concat([tf.cast(inputs[k], tf.float32) for k in PIXEL_KEYS], axis=1)
    return {FEATURE: tft.scale_to_0_1(pixels), LABEL_KEY: inputs[LABEL_KEY]}


def _dataset(file_pattern, data_accessor, tf_transform_output, batch_size):
    return data_accessor.tf_dataset_factory(
        file_pattern, tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL_KEY),
        tf_transform_output.transformed_metadata.schema).map(lambda x, y: (x[FEATURE], tf.reshape(y, [-1])))


def _build_model(num_classes=10):
    inputs = keras.Input(shape=(64,), name=FEATURE)
    x = keras.layers.Reshape((8, 8, 1))(inputs)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="stock_digits")


def run_fn(fn_args: FnArgs):
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
    keras.utils.set_random_seed(fn_args.custom_config.get("seed", 0) if fn_args.custom_config else 0)
    train = _dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output, 32)
    evaluation = _dataset(fn_args.eval_files, fn_args.data_accessor, tf_transform_output, 32)
    model = _build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.fit(train, steps_per_epoch=fn_args.train_steps // 10, epochs=10, validation_data=evaluation,
              validation_steps=fn_args.eval_steps, verbose=2)

    model.tft_layer = tf_transform_output.transform_features_layer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized):
        raw_spec = tf_transform_output.raw_feature_spec()
        raw_spec.pop(LABEL_KEY)
        transformed = model.tft_layer(tf.io.parse_example(serialized, raw_spec))
        return {"logits": model(transformed[FEATURE])}

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name=FEATURE)])
    def dense(pixels):
        return {"logits": model(pixels)}

    model.save(fn_args.serving_model_dir, save_format="tf",
               signatures={"serving_default": serve_tf_examples, "dense": dense})
