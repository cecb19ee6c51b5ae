"""The quantization pipeline: configuration, the DAG factory and its runners."""
import components  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
