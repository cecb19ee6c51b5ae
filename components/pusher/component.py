"""Pusher: publishes the blessed, selected TFLite variant as a new registry version."""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.pusher import executor
from components.settings import PushSettings


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
        settings: PushSettings,
        evaluation: Optional[types.BaseChannel] = None,
    ):
        settings.check_complete()
        super().__init__(spec=QuantizedModelPusherSpec(
            quantized_models=quantized_models, blessing=blessing, evaluation=evaluation,
            settings=settings.to_json(), pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        ))
