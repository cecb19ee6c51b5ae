"""Thin executor in the shape of TFX's Pusher: CheckBlessing, push, mark pushed or not."""
from __future__ import annotations

import logging
import json
import os
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor

from components.pusher import push
from components.tfx_utils import set_properties, single
from components.tflite_evaluator.evaluate import METRICS_FILE

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    def CheckBlessing(self, input_dict: Dict[str, List[types.Artifact]]) -> bool:
        blessing = single(input_dict, "blessing")
        return blessing.has_custom_property("blessed") and blessing.get_int_custom_property("blessed") == 1

    def _lineage(self, input_dict) -> Dict[str, Any]:
        lineage = {}
        for key in ("quantized_models", "blessing", "evaluation"):
            artifact = single(input_dict, key, optional=True)
            if artifact is not None:
                lineage[f"{key}_id"] = artifact.id
                lineage[f"{key}_uri"] = artifact.uri
        blessing = single(input_dict, "blessing")
        if blessing.has_custom_property("current_model_id"):
            lineage["float_model_id"] = blessing.get_int_custom_property("current_model_id")
        if self._context is not None:
            info = self._context.pipeline_info
            lineage["pipeline_name"] = info.id if info is not None else ""
            lineage["pipeline_run_id"] = self._context.pipeline_run_id or ""
        return lineage

    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        pushed_model = single(output_dict, "pushed_model")
        blessing = single(input_dict, "blessing")
        evaluation = single(input_dict, "evaluation", optional=True)
        metrics = {}
        if evaluation is not None and os.path.exists(os.path.join(evaluation.uri, METRICS_FILE)):
            with open(os.path.join(evaluation.uri, METRICS_FILE)) as f:
                metrics = json.load(f)
        selected = blessing.get_string_custom_property("selected_variant") if blessing.has_custom_property(
            "selected_variant") else ""
        result = push.push_selected(
            quantized_dir=single(input_dict, "quantized_models").uri,
            blessed=self.CheckBlessing(input_dict),
            selected_variant=selected,
            destination=exec_properties["push_destination"],
            model_name=exec_properties["model_name"],
            evaluation_metrics=metrics,
            lineage=self._lineage(input_dict),
        )
        if result["pushed"]:
            self._MarkPushed(pushed_model, result)
        else:
            self._MarkNotPushed(pushed_model, result)

    def _MarkPushed(self, pushed_model: types.Artifact, result: Dict[str, Any]) -> None:
        set_properties(pushed_model, {
            "pushed": 1, "pushed_destination": result["version_dir"], "pushed_version": str(result["version"]),
            "deployed_version_dir": result["deployed_version_dir"], "reason": result["reason"],
        })
        log.info("Pusher: %s", result["reason"])

    def _MarkNotPushed(self, pushed_model: types.Artifact, result: Dict[str, Any]) -> None:
        set_properties(pushed_model, {
            "pushed": 0, "deployed_version_dir": result["deployed_version_dir"], "reason": result["reason"],
            "pushed_version": str(result.get("version", "")),
        })
        if result.get("version"):  # blessed, but LATEST already holds the same bytes
            log.info("Pusher: nothing new to push: %s", result["reason"])
        else:
            log.warning("Pusher: not pushed: %s", result["reason"])
