"""QATFineTuner: quantization-aware fine-tuning of a Model from any upstream trainer."""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfx_quantization.keras2 import require_keras2
from tfx_quantization.qat_fine_tuner import executor
from tfx_quantization.settings import ModelContract, TrainSettings


class QATFineTunerSpec(ComponentSpec):
    PARAMETERS = {
        "settings": ExecutionParameter(type=str),  # TrainSettings as JSON: its qat_* fields, batch_size, seed
        "contract": ExecutionParameter(type=str, optional=True),  # ModelContract as JSON
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
    }
    OUTPUTS = {
        "qat_model": ChannelParameter(type=standard_artifacts.Model),
        "model_run": ChannelParameter(type=standard_artifacts.ModelRun),
    }


class QATFineTuner(base_component.BaseComponent):
    """Loads the Keras model of `model` (e.g. TFX's stock Trainer output), makes it
    quantization-aware and fine-tunes it on `examples` (train split; eval split reported).
    Its `qat_model` feeds PostTrainingQuantizer's `qat_model`. See README.md."""

    SPEC_CLASS = QATFineTunerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
                 settings: Optional[TrainSettings] = None, contract: Optional[ModelContract] = None):
        require_keras2("QATFineTuner")
        settings = TrainSettings.coerce(settings, "QATFineTuner")
        super().__init__(spec=QATFineTunerSpec(
            examples=examples, model=model, settings=settings.to_json(),
            contract=ModelContract.coerce(contract, "QATFineTuner").to_json() if contract else None,
            qat_model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        ))
