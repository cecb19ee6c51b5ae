"""Thin executor: resolves the models and calibration split, calls quantize_all."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from components.post_training_quantizer import quantize
from components.quantization import data
from components.quantization.selective import SearchBudget
from components.representative_dataset_gen.sampling import CALIBRATION_SPLIT
from components.tfx_utils import from_json_param, set_properties, single

log = logging.getLogger(__name__)
# The split the TFLiteEvaluator's gate uses; the selective search must never see it.
GATE_SPLIT = "eval"


def check_validation_split(split: str) -> None:
    if split == GATE_SPLIT:
        raise ValueError(
            f"validation_split={split!r} is the split the evaluator's gate uses: searching on it would leak "
            "the gate's data into the model choice; use 'train' or a dedicated validation split"
        )


def _number(value, default: float) -> float:
    return default if value is None else float(value)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model = single(input_dict, "model")
        qat_model = single(input_dict, "qat_model", optional=True)
        calibration = single(input_dict, "representative_dataset", optional=True)
        validation = single(input_dict, "validation_examples", optional=True)
        output = single(output_dict, "quantized_models")

        calibration_files = None
        if calibration is not None:
            splits = artifact_utils.decode_split_names(calibration.split_names)
            split = CALIBRATION_SPLIT if CALIBRATION_SPLIT in splits else splits[0]
            calibration_files = data.split_files(artifact_utils.get_split_uri([calibration], split))
        validation_files = None
        if validation is not None:
            split = exec_properties.get("validation_split") or "train"
            check_validation_split(split)
            splits = artifact_utils.decode_split_names(validation.split_names)
            if split not in splits:
                raise ValueError(f"validation_split {split!r} is not in the validation examples (they have {splits})")
            validation_files = data.split_files(artifact_utils.get_split_uri([validation], split))
        sources = {"model_uri": model.uri, "model_id": str(model.id)}
        if qat_model is not None:
            sources.update(qat_model_uri=qat_model.uri, qat_model_id=str(qat_model.id))
        if calibration is not None:
            sources.update(representative_dataset_uri=calibration.uri, representative_dataset_id=str(calibration.id))

        manifest = quantize.quantize_all(
            float_model_dir=path_utils.serving_model_path(model.uri),
            qat_model_dir=path_utils.serving_model_path(qat_model.uri) if qat_model is not None else None,
            out_dir=output.uri,
            calibration_files=calibration_files,
            variants=from_json_param(exec_properties.get("variants")),
            io_type=exec_properties.get("integer_io_type") or "int8",
            max_calibration_samples=exec_properties.get("max_calibration_samples") or None,
            source_uris=sources,
            validation_files=validation_files,
            validation_samples=int(exec_properties.get("validation_samples") or 1000),
            selective_budget=SearchBudget(
                max_drop=_number(exec_properties.get("selective_max_drop"), 0.01),
                max_float_layers=int(exec_properties.get("max_float_layers") or 8),
                max_steps=int(exec_properties.get("max_search_steps") or 8),
            ),
            selective_integer_io=bool(exec_properties.get("selective_integer_io") or 0),
        )
        variants = manifest["variants"]
        built = [n for n, v in variants.items() if v["status"] == quantize.OK]
        set_properties(output, {
            "variants_built": built,
            "variants_failed": {n: v["reason"] for n, v in variants.items() if v["status"] != quantize.OK},
            **{f"size_bytes_{n}": variants[n]["size_bytes"] for n in built},
        })
        log.info("PostTrainingQuantizer: built %s", built)
