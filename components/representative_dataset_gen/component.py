"""RepresentativeDatasetGen: seeded calibration sample of an Examples split, with Beam."""
from __future__ import annotations

from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.representative_dataset_gen import executor, sampling


class RepresentativeDatasetGenSpec(ComponentSpec):
    PARAMETERS = {
        "split": ExecutionParameter(type=str),
        "num_samples": ExecutionParameter(type=int),
        "strategy": ExecutionParameter(type=str),
        "label_key": ExecutionParameter(type=str, optional=True),
        "seed": ExecutionParameter(type=int),
    }
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {"representative_dataset": ChannelParameter(type=standard_artifacts.Examples)}


class RepresentativeDatasetGen(base_beam_component.BaseBeamComponent):
    """Samples `num_samples` examples of one split into an Examples artifact with the
    single split `calibration` (see README.md). A Beam component: honours beam_pipeline_args."""

    SPEC_CLASS = RepresentativeDatasetGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        split: str = "train",
        num_samples: int = 200,
        strategy: str = sampling.UNIFORM,
        label_key: Optional[str] = None,
        seed: int = 0,
    ):
        sampling.check_params(num_samples, strategy, label_key)
        super().__init__(
            spec=RepresentativeDatasetGenSpec(
                examples=examples, split=split, num_samples=num_samples, strategy=strategy,
                label_key=label_key, seed=seed,
                representative_dataset=types.Channel(type=standard_artifacts.Examples),
            )
        )
