"""Thin executor: decodes the settings, resolves the models and data splits, calls quantize_all."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from tfx_quantization import contracts
from tfx_quantization.post_training_quantizer import build
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.quantization import data
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.settings import QuantizeSettings
from tfx_quantization.tfx_utils import begin_executor, resolve_contract, set_properties, single, split_uri, write_contract

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        begin_executor("PostTrainingQuantizer")
        self._log_startup(input_dict, output_dict, exec_properties)
        settings = QuantizeSettings.from_json(exec_properties["settings"])
        model = single(input_dict, "model")
        qat_model = single(input_dict, "qat_model", optional=True)
        calibration = single(input_dict, "representative_dataset", optional=True)
        validation = single(input_dict, "validation_examples", optional=True)
        output = single(output_dict, "quantized_models")

        calibration_files = None
        if calibration is not None:
            splits = artifact_utils.decode_split_names(calibration.split_names)
            split = contracts.CALIBRATION_SPLIT if contracts.CALIBRATION_SPLIT in splits else splits[0]
            calibration_files = data.split_files(split_uri(calibration, split))
        validation_files, no_validation_reason = None, ""
        if validation is not None:
            splits = artifact_utils.decode_split_names(validation.split_names)
            if settings.validation_split in splits:
                validation_files = data.split_files(split_uri(validation, settings.validation_split))
            else:  # e.g. a stock ExampleGen's train/eval: the search is off, the rest of the run goes on
                no_validation_reason = (
                    f"the validation examples have no {settings.validation_split!r} split (they have {splits}); "
                    f"give ExampleGen a held-out {contracts.VALIDATION_SPLIT!r} split (its output_config) or set the "
                    "quantizer's validation_split to a split training never saw")
                log.warning("selective_integer is skipped: %s", no_validation_reason)
        sources = {"model_uri": model.uri, "model_id": str(model.id)}
        if qat_model is not None:
            sources.update(qat_model_uri=qat_model.uri, qat_model_id=str(qat_model.id))
        if calibration is not None:
            sources.update(representative_dataset_uri=calibration.uri, representative_dataset_id=str(calibration.id))

        float_model_dir = path_utils.serving_model_path(model.uri)
        # The parameter, else the contract recorded on `model`, else on `qat_model` (after a stock
        # Trainer only the fine-tuner's output carries it), else the file next to the float model.
        contract = ModelContract.of_spec(ModelSpec.read(
            float_model_dir, resolve_contract(exec_properties.get("contract"), model, qat_model)))
        manifest = build.quantize_all(
            float_model_dir=float_model_dir,
            qat_model_dir=path_utils.serving_model_path(qat_model.uri) if qat_model is not None else None,
            out_dir=output.uri,
            settings=settings,
            calibration_files=calibration_files,
            source_uris=sources,
            validation_files=validation_files,
            contract=contract,
            no_validation_reason=no_validation_reason,
        )
        write_contract(output, contract)  # for the evaluator
        variants = manifest.variants
        built = manifest.built()
        set_properties(output, {
            "variants_built": built,
            "variants_failed": manifest.with_status(contracts.FAILED),
            "variants_skipped": manifest.with_status(contracts.SKIPPED) or None,
            **{f"size_bytes_{n}": variants[n].size_bytes for n in built},
        })
        log.info("PostTrainingQuantizer: built %s", built)
