"""QATTrainer: trains the float model, then fine-tunes a quantization-aware copy."""
from __future__ import annotations

from typing import Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfx_quantization.keras2 import require_keras2
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.settings import SettingsError, TrainSettings
from tfx_quantization.trainer import executor


class QATTrainerSpec(ComponentSpec):
    PARAMETERS = {
        "settings": ExecutionParameter(type=str),  # TrainSettings as JSON
        "contract": ExecutionParameter(type=str),  # ModelContract as JSON: what the model takes and predicts
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "qat_model": ChannelParameter(type=standard_artifacts.Model),
        "model_run": ChannelParameter(type=standard_artifacts.ModelRun),
    }


class QATTrainer(base_component.BaseComponent):
    """Float training then quantization-aware fine-tuning; both models are outputs.

    See components/trainer/README.md for the settings and the user module contract.
    """

    SPEC_CLASS = QATTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, contract: Union[ModelContract, dict],
                 settings: Optional[Union[TrainSettings, dict]] = None):
        """contract: the model contract (a ModelContract or a dict of its fields), given once:
        its one `inputs` entry names the model's input, its features and shape; with the label
        key and num_classes. Recorded on both output models for the later stages.
        settings: the model and both training phases (None: the defaults)."""
        require_keras2("QATTrainer")
        settings = TrainSettings.coerce(settings, "QATTrainer")
        contract = ModelContract.coerce(contract, "QATTrainer")
        try:
            ModelSpec.of_contract(contract)  # the model can be built from it: fails now, not in the run
        except ValueError as e:
            raise SettingsError(f"QATTrainer: {e}") from None
        super().__init__(spec=QATTrainerSpec(
            examples=examples, settings=settings.to_json(), contract=contract.to_json(),
            model=types.Channel(type=standard_artifacts.Model),
            qat_model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        ))
