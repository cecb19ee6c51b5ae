"""Thin Beam executor: resolves artifacts, calls evaluate_models, writes the blessing."""
from __future__ import annotations

import logging
import json
import os
from typing import Any, Dict, List, Optional, Tuple, Union

from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils, path_utils

from components.tfx_utils import set_properties, single
from components.tflite_evaluator import evaluate, gate

BLESSED_FILE, NOT_BLESSED_FILE = "BLESSED", "NOT_BLESSED"
# The Pusher records where the deployed model is; see components/pusher.
DEPLOYED_DIR_PROPERTY = "deployed_version_dir"

log = logging.getLogger(__name__)


def encode_selection(selection: Union[str, List[str]]) -> str:
    return selection if isinstance(selection, str) else json.dumps(list(selection))


def decode_selection(value: str) -> Union[str, List[str]]:
    return json.loads(value) if value.strip().startswith("[") else value


def gate_config(props: Dict[str, Any]) -> gate.GateConfig:
    return gate.GateConfig(
        max_accuracy_drop=props.get("max_accuracy_drop"),
        max_relative_drop=props.get("max_relative_drop"),
        max_model_bytes=props.get("max_model_bytes"),
        max_latency_ms=props.get("max_latency_ms"),
        min_accuracy=props.get("min_accuracy"),
        allow_float32=bool(props.get("allow_float32", 0)),
        selection=decode_selection(props.get("selection") or gate.SMALLEST),
        metric=props.get("metric") or "accuracy",
    )


def deployed_model(baseline: Optional[types.Artifact]) -> Tuple[Optional[str], dict]:
    """The .tflite file the baseline PushedModel says is deployed, if any."""
    if baseline is None:
        return None, {}
    version_dir = ""
    if baseline.has_custom_property(DEPLOYED_DIR_PROPERTY):
        version_dir = baseline.get_string_custom_property(DEPLOYED_DIR_PROPERTY)
    path = os.path.join(version_dir, "model.tflite") if version_dir else ""
    if not path or not os.path.exists(path):
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
        examples = single(input_dict, "examples")
        model = single(input_dict, "model")
        quantized = single(input_dict, "quantized_models")
        evaluation_artifact = single(output_dict, "evaluation")
        blessing = single(output_dict, "blessing")
        split = exec_properties.get("split") or "eval"
        splits = artifact_utils.decode_split_names(examples.split_names)
        if split not in splits:
            raise ValueError(f"the examples have no {split!r} split (they have {splits}): nothing to evaluate")
        baseline_path, baseline_info = deployed_model(single(input_dict, "baseline", optional=True))

        params = evaluate.EvalParams(
            gate=gate_config(exec_properties),
            top_k=int(exec_properties.get("top_k") or 5),
            latency_runs=int(exec_properties.get("latency_runs") or 50),
            num_threads=int(exec_properties.get("num_threads") or 1),
            batch_size=int(exec_properties.get("batch_size") or 256),
        )
        result = evaluate.evaluate_models(
            eval_split_dir=artifact_utils.get_split_uri([examples], split),
            float_model_dir=path_utils.serving_model_path(model.uri),
            quantized_dir=quantized.uri,
            out_dir=evaluation_artifact.uri,
            params=params,
            pipeline_factory=self._make_beam_pipeline,
            baseline_tflite=baseline_path,
            baseline_info=baseline_info,
        )
        selected = result["selected_variant"]
        summary = {
            "blessed": int(result["blessed"]),
            "selected_variant": selected or "",
            "float_accuracy": result["float_model"][result["metric"]],
            "verdicts": {n: v for n, v in result["verdicts"].items()},
        }
        if selected:
            fig = result["variants"][selected]
            summary.update(
                selected_accuracy=fig[result["metric"]], selected_accuracy_drop=fig["accuracy_drop"],
                selected_size_bytes=fig["size_bytes"], selected_latency_ms=fig["latency_ms_median"],
            )
        set_properties(evaluation_artifact, summary)
        set_properties(blessing, summary)
        set_properties(blessing, {"current_model_id": model.id, "quantized_models_id": quantized.id,
                                  "quantized_models_uri": quantized.uri})
        io_utils.write_string_file(
            os.path.join(blessing.uri, BLESSED_FILE if result["blessed"] else NOT_BLESSED_FILE), ""
        )
        if selected:
            log.info("TFLiteEvaluator: blessed %s", selected)
        else:
            log.warning("TFLiteEvaluator: nothing passed the gate: %s",
                            {n: v["reasons"] for n, v in result["verdicts"].items()})
