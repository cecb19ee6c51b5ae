"""Thin Beam executor: resolves the split, runs the sampling transforms, records stats."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from tfx_quantization import contracts
from tfx_quantization.quantization.model_spec import read_contract_file
from tfx_quantization.representative_dataset_gen import sampling
from tfx_quantization.settings import CalibrationSettings
from tfx_quantization.tfx_utils import begin_executor, read_contract, set_properties, single, split_uri

log = logging.getLogger(__name__)


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        begin_executor("RepresentativeDatasetGen")
        self._log_startup(input_dict, output_dict, exec_properties)
        settings = CalibrationSettings.from_json(exec_properties["settings"])
        contract = self._model_contract(single(input_dict, "model", optional=True), settings)
        settings = settings.resolved(contract.label_key if contract and contract.has_labels else "")
        examples = single(input_dict, "examples")
        output = single(output_dict, "representative_dataset")
        pattern = sampling.precheck_split(split_uri(examples, settings.source_split), settings)
        log.info("Sampling %d examples from split %r (%s, seed %s)", settings.num_samples, settings.source_split,
                 settings.strategy, settings.seed)
        with self._make_beam_pipeline() as pipeline:
            # A regression target is stratified by its quantile bins, even when stored as integers.
            sampling.build_sampling(pipeline, pattern, output.uri, settings,
                                    real_label=True if contract and contract.task == "regression" else None)
        stats = sampling.read_stats(output.uri)

        output.split_names = artifact_utils.encode_split_names([contracts.CALIBRATION_SPLIT])
        output.span = examples.span
        set_properties(output, {
            "num_samples": stats["num_samples_taken"],
            "num_samples_requested": settings.num_samples,
            "strategy": settings.strategy,
            "seed": settings.seed or 0,
            "source_split": settings.source_split,
            "num_dropped_non_finite": stats["num_dropped_non_finite"],
            "per_class_counts": stats["per_class_samples"] or None,
        })
        log.info("Calibration sample: %d examples, per class %s", stats["num_samples_taken"], stats["per_class_samples"])

    @staticmethod
    def _model_contract(model, settings: CalibrationSettings):
        """`model`'s contract (recorded on the artifact, else next to the SavedModel), whose
        label key and task calibration follows when the settings name no label key; None
        when they do, or there is no model or no contract."""
        if settings.label_key or model is None:
            return None
        contract = read_contract(model) or read_contract_file(path_utils.serving_model_path(model.uri))
        if contract is None:
            log.warning("the model at %s records no contract: no label key for calibration", model.uri)
        return contract
