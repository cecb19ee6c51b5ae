"""PostTrainingQuantizer: every TFLite variant of the trained models, with a manifest."""
from __future__ import annotations

from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.post_training_quantizer import executor
from components.quantization import convert
from components.tfx_utils import to_json_param


class PostTrainingQuantizerSpec(ComponentSpec):
    PARAMETERS = {
        "variants": ExecutionParameter(type=str, optional=True),  # JSON list; empty: all
        "integer_io_type": ExecutionParameter(type=str),
        "max_calibration_samples": ExecutionParameter(type=int, optional=True),
        # selective_integer: the accuracy-aware search (see README.md).
        "validation_split": ExecutionParameter(type=str),
        "validation_samples": ExecutionParameter(type=int),
        "selective_max_drop": ExecutionParameter(type=float),
        "max_float_layers": ExecutionParameter(type=int),
        "max_search_steps": ExecutionParameter(type=int),
        "selective_integer_io": ExecutionParameter(type=int),
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "qat_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
        "representative_dataset": ChannelParameter(type=standard_artifacts.Examples, optional=True),
        "validation_examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {"quantized_models": ChannelParameter(type=standard_artifacts.Model)}


class PostTrainingQuantizer(base_component.BaseComponent):
    """Converts the float (and QAT) model into the TFLite variants; see README.md."""

    SPEC_CLASS = PostTrainingQuantizerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        qat_model: Optional[types.BaseChannel] = None,
        representative_dataset: Optional[types.BaseChannel] = None,
        variants: Optional[Sequence[str]] = None,
        integer_io_type: str = "int8",
        max_calibration_samples: Optional[int] = None,
        validation_examples: Optional[types.BaseChannel] = None,
        validation_split: str = "train",
        validation_samples: int = 1000,
        selective_max_drop: float = 0.01,
        max_float_layers: int = 8,
        max_search_steps: int = 8,
        selective_integer_io: bool = False,
    ):
        if variants:
            convert.check_variant_names(variants)
        convert.check_io_type(integer_io_type)
        executor.check_validation_split(validation_split)
        if validation_samples < 1 or max_float_layers < 1 or max_search_steps < 1:
            raise ValueError("validation_samples, max_float_layers and max_search_steps must be at least 1")
        super().__init__(
            spec=PostTrainingQuantizerSpec(
                model=model, qat_model=qat_model, representative_dataset=representative_dataset,
                variants=to_json_param(list(variants)) if variants else None,
                integer_io_type=integer_io_type, max_calibration_samples=max_calibration_samples,
                validation_examples=validation_examples, validation_split=validation_split,
                validation_samples=validation_samples, selective_max_drop=selective_max_drop,
                max_float_layers=max_float_layers, max_search_steps=max_search_steps,
                selective_integer_io=int(selective_integer_io),
                quantized_models=types.Channel(type=standard_artifacts.Model),
            )
        )
