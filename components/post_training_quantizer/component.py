"""PostTrainingQuantizer: every TFLite variant of the trained models, with a manifest."""
from __future__ import annotations

from typing import Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfx_quantization import contracts
from tfx_quantization.keras2 import require_keras2
from tfx_quantization.post_training_quantizer import executor
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.settings import QuantizeSettings, SettingsError


class PostTrainingQuantizerSpec(ComponentSpec):
    PARAMETERS = {
        "settings": ExecutionParameter(type=str),  # QuantizeSettings as JSON
        # ModelContract as JSON: how the model meets the examples; absent: the contract
        # recorded on `model`, else on `qat_model`, else next to the float model.
        "contract": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "qat_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
        "representative_dataset": ChannelParameter(type=standard_artifacts.Examples, optional=True),
        "validation_examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {"quantized_models": ChannelParameter(type=standard_artifacts.Model)}


class PostTrainingQuantizer(base_component.BaseComponent):
    """Converts the float (and QAT) model into the TFLite variants; see README.md. Records
    the model contract it used on `quantized_models`."""

    SPEC_CLASS = PostTrainingQuantizerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        qat_model: Optional[types.BaseChannel] = None,
        representative_dataset: Optional[types.BaseChannel] = None,
        validation_examples: Optional[types.BaseChannel] = None,
        settings: Optional[Union[QuantizeSettings, dict]] = None,
        contract: Optional[Union[ModelContract, dict]] = None,
    ):
        """contract: overrides the contract recorded on the models (a ModelContract or a dict)."""
        require_keras2("PostTrainingQuantizer")
        settings = QuantizeSettings.coerce(settings, "PostTrainingQuantizer")
        if validation_examples is None and contracts.SELECTIVE_INTEGER in settings.variants:
            raise SettingsError(
                f"PostTrainingQuantizer: variants names {contracts.SELECTIVE_INTEGER!r}, whose search validates on "
                "held-out examples: pass validation_examples (Examples with a split training never saw, "
                f"settings.validation_split, default {contracts.VALIDATION_SPLIT!r}) or drop it from variants")
        super().__init__(spec=PostTrainingQuantizerSpec(
            model=model, qat_model=qat_model, representative_dataset=representative_dataset,
            validation_examples=validation_examples, settings=settings.to_json(),
            contract=ModelContract.coerce(contract, "PostTrainingQuantizer").to_json() if contract else None,
            quantized_models=types.Channel(type=standard_artifacts.Model),
        ))
