"""TFLiteEvaluator: every variant against the float model, the gate, selection, report."""
from __future__ import annotations

from typing import Optional, Union

from tfx.orchestration import data_types
from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfx_quantization.keras2 import require_keras2
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.settings import GateSettings, PushSettings
from tfx_quantization.tflite_evaluator import executor


class TFLiteEvaluatorSpec(ComponentSpec):
    PARAMETERS = {
        "settings": ExecutionParameter(type=str),  # GateSettings as JSON
        # JSON merged over `settings` when the executor decodes them: a Kubeflow runtime
        # parameter lets operators change a bound without recompiling.
        "overrides": ExecutionParameter(type=str, optional=True),
        # PushSettings as JSON: the registry whose LATEST version is the deployed baseline.
        "registry": ExecutionParameter(type=str, optional=True),
        # What that registry held when the pipeline was built (Registry.state): part of the
        # cache key, so a cached evaluation is reused only while the same model is deployed.
        # The executor itself reads the registry when it runs.
        "deployed_state": ExecutionParameter(type=str, optional=True),
        # ModelContract as JSON; absent: the one recorded on `quantized_models`, else on
        # `model`, else next to the float model.
        "contract": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "quantized_models": ChannelParameter(type=standard_artifacts.Model),
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
        settings: Optional[Union[GateSettings, dict]] = None,
        registry: Optional[Union[PushSettings, data_types.RuntimeParameter]] = None,
        overrides: Optional[Union[str, data_types.RuntimeParameter]] = None,
        deployed_state: Optional[str] = None,
        contract: Optional[Union[ModelContract, dict]] = None,
    ):
        """registry: where the deployed model is (the Pusher's settings); its LATEST version
        is re-evaluated on the same examples for the no-regression check. None: no check.
        contract: overrides the contract recorded on the models (a ModelContract or a dict)."""
        require_keras2("TFLiteEvaluator")
        settings = GateSettings.coerce(settings, "TFLiteEvaluator")
        if isinstance(overrides, str):
            settings.with_overrides(overrides)  # fails now, not in the run
        super().__init__(spec=TFLiteEvaluatorSpec(
            examples=examples, model=model, quantized_models=quantized_models,
            settings=settings.to_json(), overrides=overrides, deployed_state=deployed_state,
            contract=ModelContract.coerce(contract, "TFLiteEvaluator").to_json() if contract else None,
            registry=(_complete(PushSettings.coerce(registry, "TFLiteEvaluator")).to_json()
                      if isinstance(registry, (PushSettings, dict)) else registry),
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing),
        ))


def _complete(registry: PushSettings) -> PushSettings:
    """The registry must name its destination and model now, as the pusher's must: an
    incomplete one would otherwise fail in the evaluator, after training and quantization."""
    registry.check_complete()
    return registry
