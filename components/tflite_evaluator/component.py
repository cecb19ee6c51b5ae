"""TFLiteEvaluator: every variant against the float model, the gate, selection, report."""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.settings import GateSettings
from components.tflite_evaluator import executor


class TFLiteEvaluatorSpec(ComponentSpec):
    PARAMETERS = {"settings": ExecutionParameter(type=str)}  # GateSettings as JSON
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "quantized_models": ChannelParameter(type=standard_artifacts.Model),
        "baseline": ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class TFLiteEvaluator(base_beam_component.BaseBeamComponent):
    """Evaluates the quantizer's variants and the float model in one Beam pass, gates,
    selects and blesses; see README.md for the gate semantics."""

    SPEC_CLASS = TFLiteEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        quantized_models: types.BaseChannel,
        baseline: Optional[types.BaseChannel] = None,
        settings: Optional[GateSettings] = None,
    ):
        settings = settings or GateSettings()
        super().__init__(spec=TFLiteEvaluatorSpec(
            examples=examples, model=model, quantized_models=quantized_models, baseline=baseline,
            settings=settings.to_json(),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        ))
