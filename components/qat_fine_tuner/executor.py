"""Thin executor: decodes the settings, resolves artifacts, calls training.fine_tune."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from tfx_quantization import contracts
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.settings import FineTuneSettings
from tfx_quantization.tfx_utils import (
    begin_executor, require_splits, resolve_contract, set_properties, single, write_contract,
)
from tfx_quantization import training

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        begin_executor("QATFineTuner")
        self._log_startup(input_dict, output_dict, exec_properties)
        cfg = FineTuneSettings.from_json(exec_properties["settings"])
        examples = single(input_dict, "examples")
        require_splits(examples, [contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT])
        model = single(input_dict, "model")
        # The parameter, else the one recorded on `model`, else (in fine_tune) the file next to it.
        contract = resolve_contract(exec_properties.get("contract"), model)
        qat_model = single(output_dict, "qat_model")
        result = training.fine_tune(
            model_dir=path_utils.serving_model_path(model.uri),
            train_dir=artifact_utils.get_split_uri([examples], contracts.TRAIN_SPLIT),
            eval_dir=artifact_utils.get_split_uri([examples], contracts.EVAL_SPLIT),
            qat_out=path_utils.serving_model_dir(qat_model.uri),
            log_dir=single(output_dict, "model_run").uri,
            cfg=cfg,
            contract=contract,
        )
        write_contract(qat_model, ModelContract.of_spec(result.spec))
        set_properties(qat_model, {
            "eval_accuracy": result.qat_accuracy,
            "float_accuracy": result.float_accuracy,
            "float_layers": result.float_layers,
            "num_float_layers": len(result.float_layers),
            "source_model_id": str(model.id),
            "qat_failure": result.qat_failure or None,  # no QAT model: why (the quantizer records it)
        })
        log.info("QATFineTuner: float accuracy %.4f, QAT accuracy %s, layers left float: %s",
                 result.float_accuracy, result.qat_accuracy, result.float_layers)
