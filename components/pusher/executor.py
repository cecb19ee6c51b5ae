"""Thin executor in the shape of TFX's Pusher: CheckBlessing, push, mark the result."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor

from tfx_quantization import contracts
from tfx_quantization.pusher import push
from tfx_quantization.settings import PushSettings
from tfx_quantization.tfx_utils import begin_executor, get_property, set_properties, single

log = logging.getLogger(__name__)


class Executor(base_executor.BaseExecutor):
    def CheckBlessing(self, input_dict: Dict[str, List[types.Artifact]]) -> bool:
        return get_property(single(input_dict, "blessing"), contracts.BLESSED) == 1

    def _lineage(self, input_dict) -> Dict[str, Any]:
        lineage = {}
        for key in ("quantized_models", "blessing", "evaluation"):
            artifact = single(input_dict, key, optional=True)
            if artifact is not None:
                lineage[f"{key}_id"] = artifact.id
                lineage[f"{key}_uri"] = artifact.uri
        float_model_id = get_property(single(input_dict, "blessing"), contracts.FLOAT_MODEL_ID)
        if float_model_id is not None:
            lineage["float_model_id"] = float_model_id
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
        begin_executor("QuantizedModelPusher")
        self._log_startup(input_dict, output_dict, exec_properties)
        settings = PushSettings.from_json(exec_properties["settings"])
        pushed_model = single(output_dict, "pushed_model")
        evaluation = single(input_dict, "evaluation", optional=True)
        result = push.push_selected(
            quantized_dir=single(input_dict, "quantized_models").uri,
            blessed=self.CheckBlessing(input_dict),
            selected_variant=get_property(single(input_dict, "blessing"), contracts.SELECTED_VARIANT, ""),
            settings=settings,
            evaluation=contracts.read_evaluation(evaluation.uri) if evaluation is not None else None,
            lineage=self._lineage(input_dict),
            evaluated_registry=get_property(single(input_dict, "blessing"), contracts.EVALUATED_REGISTRY, ""),
        )
        self._Mark(pushed_model, result)

    def _Mark(self, pushed_model: types.Artifact, result: contracts.PushResult) -> None:
        """Records the result as the PushedModel's properties (pushed 1/0, as TFX's Pusher)."""
        set_properties(pushed_model, contracts.push_result_properties(result))
        if result.pushed:
            log.info("Pusher: %s", result.reason)
        elif result.already_deployed:
            log.info("Pusher: nothing new to push: %s", result.reason)
        else:
            log.warning("Pusher: not pushed: %s", result.reason)
