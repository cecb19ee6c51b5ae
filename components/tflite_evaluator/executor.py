"""Thin Beam executor: decodes the settings, resolves artifacts, calls evaluate_models,
writes the blessing."""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Tuple

from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.utils import path_utils

from components import contracts, fsutil
from components.settings import GateSettings
from components.tflite_evaluator import evaluate
from components.tfx_utils import get_property, set_properties, single, split_uri

log = logging.getLogger(__name__)


def deployed_model(baseline: Optional[types.Artifact]) -> Tuple[Optional[str], dict]:
    """The .tflite file the baseline PushedModel says is deployed, if any."""
    version_dir = get_property(baseline, contracts.DEPLOYED_VERSION_DIR, "")
    path = fsutil.join(version_dir, contracts.MODEL_FILE) if version_dir else ""
    if not path or not fsutil.exists(path):
        if baseline is not None:
            log.info("No deployed model to compare against (baseline %s): no-regression check skipped", baseline.uri)
        return None, {}
    return path, {"version_dir": version_dir, "version": os.path.basename(version_dir.rstrip("/"))}


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        settings = GateSettings.from_json(exec_properties["settings"])
        examples = single(input_dict, "examples")
        model = single(input_dict, "model")
        quantized = single(input_dict, "quantized_models")
        evaluation_artifact = single(output_dict, "evaluation")
        blessing = single(output_dict, "blessing")
        eval_split_dir = split_uri(examples, settings.eval_split)
        baseline_path, baseline_info = deployed_model(single(input_dict, "baseline", optional=True))

        result = evaluate.evaluate_models(
            eval_split_dir=eval_split_dir,
            float_model_dir=path_utils.serving_model_path(model.uri),
            quantized_dir=quantized.uri,
            out_dir=evaluation_artifact.uri,
            params=settings,
            pipeline_factory=self._make_beam_pipeline,
            baseline_tflite=baseline_path,
            baseline_info=baseline_info,
        )
        selected = result["selected_variant"]
        summary = {
            contracts.BLESSED: int(result["blessed"]),
            contracts.SELECTED_VARIANT: selected or "",
            contracts.FLOAT_ACCURACY: result["float_model"][result["metric"]],
            contracts.VERDICTS: result["verdicts"],
        }
        if selected:
            fig = result["variants"][selected]
            summary.update({
                contracts.SELECTED_ACCURACY: fig[result["metric"]],
                contracts.SELECTED_ACCURACY_DROP: fig["accuracy_drop"],
                contracts.SELECTED_SIZE_BYTES: fig["size_bytes"],
                contracts.SELECTED_LATENCY_MS: fig["latency_ms_median"],
            })
        set_properties(evaluation_artifact, summary)
        set_properties(blessing, summary)
        set_properties(blessing, {contracts.CURRENT_MODEL_ID: model.id, contracts.QUANTIZED_MODELS_ID: quantized.id,
                                  contracts.QUANTIZED_MODELS_URI: quantized.uri})
        fsutil.write_bytes_atomic(fsutil.join(
            blessing.uri, contracts.BLESSED_FILE if result["blessed"] else contracts.NOT_BLESSED_FILE), b"")
        if selected:
            log.info("TFLiteEvaluator: blessed %s", selected)
        else:
            log.warning("TFLiteEvaluator: nothing passed the gate: %s",
                        {n: v["reasons"] for n, v in result["verdicts"].items()})
