"""A user model module for README's "Your own data and model": build_model() returns a
tf_keras model whose first layer (Rescaling) tfmot cannot quantize, so the QAT stage keeps
it float (selective QAT) and quantizes the rest.

    module_file: data/examples/my_model.py in data/examples/own_data.yaml
"""
import tf_keras as keras  # Keras 2: tfmot does not work with Keras 3


def build_model(input_shape, num_classes, input_name, output_name, filters=16, **kwargs):
    inputs = keras.Input(shape=tuple(input_shape), name=input_name)
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)  # 0..1 -> -1..1
    x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name=output_name)(x)
    return keras.Model(inputs, outputs, name="my_model")
