"""A stock TFX Trainer module as a platform team already has one: no Transform, no
knowledge of quantization. It trains a small tf_keras CNN on the raw digits examples that
TFX's CsvExampleGen writes (64 int64 columns `pixel_00`..`pixel_63`, int64 `label`) and
exports two signatures:

    serving_default  serialized tf.Examples -> {"logits": [batch, 10]}  (what a server calls)
    dense            {"pixels": float32 [batch, 64]} -> {"logits": [batch, 10]}
                     (what TFLite converts; the pipeline's model contract names it)

Keras 2 (`tf_keras`): tensorflow-model-optimization, which fine-tunes this model
quantization-aware, needs it.
"""
import tensorflow as tf
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs

PIXEL_KEYS = [f"pixel_{i:02d}" for i in range(64)]
LABEL_KEY = "label"


def _dataset(file_pattern, batch_size, seed):
    spec = {k: tf.io.FixedLenFeature([1], tf.int64) for k in PIXEL_KEYS + [LABEL_KEY]}
    files = tf.io.gfile.glob(file_pattern if isinstance(file_pattern, str) else file_pattern[0])
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").shuffle(2048, seed=seed).repeat().batch(batch_size)

    def parse(serialized):
        x = tf.io.parse_example(serialized, spec)
        pixels = tf.concat([tf.cast(x[k], tf.float32) for k in PIXEL_KEYS], axis=1)
        return pixels, tf.reshape(x[LABEL_KEY], [-1])

    return ds.map(parse)


def _build_model(num_classes=10):
    inputs = keras.Input(shape=(64,), name="pixels")
    x = keras.layers.Rescaling(1.0 / 16.0)(inputs)  # the digits' pixels are 0..16
    x = keras.layers.Reshape((8, 8, 1))(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="own_digits")


def run_fn(fn_args: FnArgs):
    seed = (fn_args.custom_config or {}).get("seed", 0)
    keras.utils.set_random_seed(seed)
    model = _build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    model.fit(_dataset(fn_args.train_files, 32, seed), steps_per_epoch=max(1, fn_args.train_steps // 10), epochs=10,
              validation_data=_dataset(fn_args.eval_files, 32, seed), validation_steps=fn_args.eval_steps, verbose=2)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_tf_examples(serialized):
        spec = {k: tf.io.FixedLenFeature([1], tf.int64) for k in PIXEL_KEYS}
        x = tf.io.parse_example(serialized, spec)
        return {"logits": model(tf.concat([tf.cast(x[k], tf.float32) for k in PIXEL_KEYS], axis=1))}

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="pixels")])
    def dense(pixels):
        return {"logits": model(pixels)}

    model.save(fn_args.serving_model_dir, save_format="tf",
               signatures={"serving_default": serve_tf_examples, "dense": dense})
