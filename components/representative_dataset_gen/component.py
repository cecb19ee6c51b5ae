"""RepresentativeDatasetGen: seeded calibration sample of an Examples split, with Beam."""
from __future__ import annotations

from typing import Optional, Union

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfx_quantization.keras2 import require_keras2
from tfx_quantization.representative_dataset_gen import executor
from tfx_quantization.settings import CalibrationSettings


class RepresentativeDatasetGenSpec(ComponentSpec):
    PARAMETERS = {"settings": ExecutionParameter(type=str)}  # CalibrationSettings as JSON
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        # A model whose recorded contract names the label when settings.label_key is ''.
        "model": ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {"representative_dataset": ChannelParameter(type=standard_artifacts.Examples)}


class RepresentativeDatasetGen(base_beam_component.BaseBeamComponent):
    """Samples `num_samples` examples of one split into an Examples artifact with the
    single split `calibration` (see README.md). A Beam component: honours beam_pipeline_args.

    Given `examples` alone it samples uniformly; with a label key (settings.label_key, or the
    contract recorded on `model`) it stratifies by label unless settings.strategy says not."""

    SPEC_CLASS = RepresentativeDatasetGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel,
                 settings: Optional[Union[CalibrationSettings, dict]] = None,
                 model: Optional[types.BaseChannel] = None):
        """settings: a CalibrationSettings or a dict of its fields (None: the defaults).
        model: a Model channel (QATTrainer's or QATFineTuner's) whose contract gives the label
        key when settings.label_key is ''."""
        require_keras2("RepresentativeDatasetGen")
        settings = CalibrationSettings.coerce(settings, "RepresentativeDatasetGen")
        if model is None:
            settings.resolved()  # stratified without any label key: fails now, not in the run
        super().__init__(spec=RepresentativeDatasetGenSpec(
            examples=examples, model=model, settings=settings.to_json(),
            representative_dataset=types.Channel(type=standard_artifacts.Examples),
        ))
