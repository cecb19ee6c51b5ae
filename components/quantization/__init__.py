"""The pure library behind the components: no TFX imports here.

model_spec  the input/label contract written next to every model
data        tf.Example files -> model inputs (trainer, calibration, evaluator share it)
"""
