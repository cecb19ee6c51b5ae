"""Thin executor: resolves artifacts, calls training.train, records properties."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.tfx_utils import from_json_param, set_properties, single
from components.trainer import training

log = logging.getLogger(__name__)


def _check_schema(schema_uri: str, keys: List[str]) -> None:
    schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(schema_uri))
    known = {f.name for f in schema.feature}
    missing = [k for k in keys if k not in known]
    if missing:
        raise ValueError(f"feature(s) {missing} are not in the schema (it has {sorted(known)[:8]} ...)")


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = single(input_dict, "examples")
        cfg = training.TrainConfig(
            feature_keys=from_json_param(exec_properties["feature_keys"]),
            input_shape=from_json_param(exec_properties["input_shape"]),
            label_key=exec_properties["label_key"],
            num_classes=int(exec_properties["num_classes"]),
            model_name=exec_properties.get("model_name") or "",
            module_file=exec_properties.get("module_file") or "",
            model_kwargs=from_json_param(exec_properties.get("model_kwargs"), {}),
            epochs=int(exec_properties["epochs"]),
            steps_per_epoch=int(exec_properties["steps_per_epoch"]),
            qat_epochs=int(exec_properties["qat_epochs"]),
            qat_steps_per_epoch=int(exec_properties["qat_steps_per_epoch"]),
            batch_size=int(exec_properties["batch_size"]),
            learning_rate=float(exec_properties["learning_rate"]),
            qat_learning_rate=float(exec_properties["qat_learning_rate"]),
            seed=int(exec_properties["seed"]),
        )
        schema = single(input_dict, "schema", optional=True)
        if schema is not None:
            _check_schema(schema.uri, cfg.feature_keys + [cfg.label_key])

        split_names = artifact_utils.decode_split_names(examples.split_names)
        for split in ("train", "eval"):
            if split not in split_names:
                raise ValueError(f"the examples have no {split!r} split (they have {split_names})")
        model = single(output_dict, "model")
        qat_model = single(output_dict, "qat_model")
        model_run = single(output_dict, "model_run")

        result = training.train(
            train_dir=artifact_utils.get_split_uri([examples], "train"),
            eval_dir=artifact_utils.get_split_uri([examples], "eval"),
            float_out=path_utils.serving_model_dir(model.uri),
            qat_out=path_utils.serving_model_dir(qat_model.uri),
            log_dir=model_run.uri,
            cfg=cfg,
        )
        set_properties(model, {"eval_accuracy": result.float_accuracy, "model_name": cfg.model_name or os.path.basename(cfg.module_file)})
        set_properties(
            qat_model,
            {
                "eval_accuracy": result.qat_accuracy,
                "float_accuracy": result.float_accuracy,
                "float_layers": result.float_layers,
                "num_float_layers": len(result.float_layers),
            },
        )
        log.info(
            "QATTrainer: float accuracy %.4f, QAT accuracy %s, layers left float: %s",
            result.float_accuracy, result.qat_accuracy, result.float_layers,
        )
