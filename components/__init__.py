"""Custom TFX components for the quantization pipeline.

Importing this package puts TF_USE_LEGACY_KERAS=1 in force. tensorflow-model-optimization
works only with Keras 2 (the `tf_keras` package); TensorFlow 2.16 resolves `tf.keras` to
Keras 3 unless this variable is set before `tf.keras` is first touched. Every entry point
(the pipeline package, the TFX CLI's runner file, tests, Beam workers unpickling our
DoFns) imports this package first, so the variable is set everywhere, and it is inherited
by the subprocesses that Beam's multi-process DirectRunner starts.
"""
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
