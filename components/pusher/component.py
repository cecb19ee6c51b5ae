"""Pusher: publishes the blessed, selected TFLite variant as a new registry version."""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.pusher import executor
from components.pusher.registry import Registry


class QuantizedModelPusherSpec(ComponentSpec):
    PARAMETERS = {
        "push_destination": ExecutionParameter(type=str),
        "model_name": ExecutionParameter(type=str),
    }
    INPUTS = {
        "quantized_models": ChannelParameter(type=standard_artifacts.Model),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
    }
    OUTPUTS = {"pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}


class QuantizedModelPusher(base_component.BaseComponent):
    """Pushes only a blessed variant, atomically, to <push_destination>/<model_name>/<version>/."""

    SPEC_CLASS = QuantizedModelPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        quantized_models: types.BaseChannel,
        blessing: types.BaseChannel,
        push_destination: str,
        model_name: str,
        evaluation: Optional[types.BaseChannel] = None,
    ):
        Registry(push_destination, model_name)  # validates both early
        super().__init__(
            spec=QuantizedModelPusherSpec(
                quantized_models=quantized_models, blessing=blessing, evaluation=evaluation,
                push_destination=push_destination, model_name=model_name,
                pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            )
        )
