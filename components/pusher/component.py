"""Pusher: publishes the blessed, selected TFLite variant as a new registry version."""
from __future__ import annotations

from typing import Optional, Union

from tfx.orchestration import data_types

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfx_quantization.keras2 import require_keras2
from tfx_quantization.pusher import executor
from tfx_quantization.settings import PushSettings


class QuantizedModelPusherSpec(ComponentSpec):
    PARAMETERS = {"settings": ExecutionParameter(type=str)}  # PushSettings as JSON
    INPUTS = {
        "quantized_models": ChannelParameter(type=standard_artifacts.Model),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
    }
    OUTPUTS = {"pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}


class QuantizedModelPusher(base_component.BaseComponent):
    """Pushes only a blessed variant, atomically, to <destination>/<model_name>/<version>/."""

    SPEC_CLASS = QuantizedModelPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        quantized_models: types.BaseChannel,
        blessing: types.BaseChannel,
        settings: Union[PushSettings, data_types.RuntimeParameter],
        evaluation: Optional[types.BaseChannel] = None,
    ):
        """settings: a PushSettings, or a Kubeflow runtime parameter holding one as JSON."""
        require_keras2("QuantizedModelPusher")
        if isinstance(settings, (PushSettings, dict)):
            settings = PushSettings.coerce(settings, "QuantizedModelPusher")
            settings.check_complete()
            settings = settings.to_json()
        super().__init__(spec=QuantizedModelPusherSpec(
            quantized_models=quantized_models, blessing=blessing, evaluation=evaluation,
            settings=settings, pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        ))
