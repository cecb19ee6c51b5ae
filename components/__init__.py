"""tfx_quantization: custom TFX components that take a Keras model from training to a
versioned, gated, quantized TFLite model.

The public API, importable from here::

    from tfx_quantization import (
        QATTrainer, QATFineTuner, RepresentativeDatasetGen, PostTrainingQuantizer,
        TFLiteEvaluator, QuantizedModelPusher,                      # the six components
        ModelContract, TrainSettings, FineTuneSettings, CalibrationSettings,
        QuantizeSettings, GateSettings, DeploymentTarget, PushSettings,  # their settings
        PipelineConfig, create_pipeline, quantization_stages,       # the bundled DAG
    )

Each component takes its settings as a settings object or a plain dict (validated when the
component is built; a bad value raises `SettingsError` with one line naming the setting).

Importing this package changes nothing process-wide and loads neither TensorFlow nor TFX:
the names above are loaded on first use. tensorflow-model-optimization needs Keras 2, so
`TF_USE_LEGACY_KERAS=1` must be in the environment before TensorFlow or TFX is first
imported; building a component or running an executor under Keras 3 stops with a one-line
`KerasVersionError` that says so (`tfx_quantization.keras2`).
"""
from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import Any

try:
    __version__ = _metadata.version("tfx-quantization-pipeline")
except _metadata.PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

# public name -> the module that defines it (loaded on first access, PEP 562)
_PUBLIC = {
    "QATTrainer": "tfx_quantization.trainer.component",
    "QATFineTuner": "tfx_quantization.qat_fine_tuner.component",
    "RepresentativeDatasetGen": "tfx_quantization.representative_dataset_gen.component",
    "PostTrainingQuantizer": "tfx_quantization.post_training_quantizer.component",
    "TFLiteEvaluator": "tfx_quantization.tflite_evaluator.component",
    "QuantizedModelPusher": "tfx_quantization.pusher.component",
    "ModelContract": "tfx_quantization.model_contract",
    "InputFeatures": "tfx_quantization.model_contract",
    "ImageDecoding": "tfx_quantization.model_contract",
    "TrainSettings": "tfx_quantization.settings",
    "FineTuneSettings": "tfx_quantization.settings",
    "CalibrationSettings": "tfx_quantization.settings",
    "QuantizeSettings": "tfx_quantization.settings",
    "GateSettings": "tfx_quantization.settings",
    "DeploymentTarget": "tfx_quantization.settings",
    "PushSettings": "tfx_quantization.settings",
    "SettingsError": "tfx_quantization.settings",
    "KerasVersionError": "tfx_quantization.keras2",
    "PipelineConfig": "tfx_quantization.pipeline.config",
    "create_pipeline": "tfx_quantization.pipeline.dag",
    "quantization_stages": "tfx_quantization.pipeline.dag",
    "Registry": "tfx_quantization.registry",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'tfx_quantization' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
