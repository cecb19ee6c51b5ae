"""Thin executor: decodes the settings, resolves artifacts, calls training.train."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from tfx_quantization import contracts
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.settings import TrainSettings
from tfx_quantization.tfx_utils import begin_executor, require_splits, set_properties, single, write_contract
from tfx_quantization import training

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        begin_executor("QATTrainer")
        self._log_startup(input_dict, output_dict, exec_properties)
        cfg = TrainSettings.from_json(exec_properties["settings"])
        contract = ModelContract.from_json(exec_properties["contract"])
        examples = single(input_dict, "examples")
        require_splits(examples, [contracts.TRAIN_SPLIT, contracts.EVAL_SPLIT])
        model = single(output_dict, "model")
        qat_model = single(output_dict, "qat_model")
        model_run = single(output_dict, "model_run")

        result = training.train(
            train_dir=artifact_utils.get_split_uri([examples], contracts.TRAIN_SPLIT),
            eval_dir=artifact_utils.get_split_uri([examples], contracts.EVAL_SPLIT),
            float_out=path_utils.serving_model_dir(model.uri),
            qat_out=path_utils.serving_model_dir(qat_model.uri),
            log_dir=model_run.uri,
            cfg=cfg,
            contract=contract,
        )
        resolved = ModelContract.of_spec(result.spec)  # the contract travels on both models
        write_contract(model, resolved)
        write_contract(qat_model, resolved)
        set_properties(model, {"eval_accuracy": result.float_accuracy,
                               "model_name": cfg.model if not cfg.module_file else os.path.basename(cfg.module_file)})
        set_properties(qat_model, {
            "eval_accuracy": result.qat_accuracy,
            "float_accuracy": result.float_accuracy,
            "float_layers": result.float_layers,
            "num_float_layers": len(result.float_layers),
            "qat_failure": result.qat_failure or None,  # no QAT model: why (the quantizer records it)
        })
        log.info("QATTrainer: float accuracy %.4f, QAT accuracy %s, layers left float: %s",
                 result.float_accuracy, result.qat_accuracy, result.float_layers)
