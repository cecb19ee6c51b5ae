"""QATFineTuner: quantization-aware fine-tuning of a Model from any upstream trainer."""
from __future__ import annotations

from typing import Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfx_quantization.keras2 import require_keras2
from tfx_quantization.qat_fine_tuner import executor
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.settings import FineTuneSettings


class QATFineTunerSpec(ComponentSpec):
    PARAMETERS = {
        "settings": ExecutionParameter(type=str),  # FineTuneSettings as JSON
        # ModelContract as JSON; absent: the one recorded on `model` (or next to it).
        "contract": ExecutionParameter(type=str, optional=True),
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
    Its `qat_model` feeds PostTrainingQuantizer's `qat_model` and carries the resolved model
    contract (custom property and file) for the later stages. See README.md."""

    SPEC_CLASS = QATFineTunerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
                 settings: Optional[Union[FineTuneSettings, dict]] = None,
                 contract: Optional[Union[ModelContract, dict]] = None):
        """settings: the fine-tuning (a FineTuneSettings, a dict of its fields, or a
        TrainSettings, whose fine-tuning fields are taken); None: the defaults.
        contract: how `model` meets the examples (a ModelContract or a dict); give it after a
        stock TFX Trainer, whose model carries none. None: the one recorded on `model`."""
        require_keras2("QATFineTuner")
        settings = FineTuneSettings.coerce(settings, "QATFineTuner")
        super().__init__(spec=QATFineTunerSpec(
            examples=examples, model=model, settings=settings.to_json(),
            contract=ModelContract.coerce(contract, "QATFineTuner").to_json() if contract else None,
            qat_model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        ))
