"""Thin Beam executor: decodes the settings, resolves artifacts, calls evaluate_models,
writes the blessing."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils
from tfx.utils import path_utils

from tfx_quantization import contracts, fsutil
from tfx_quantization.registry import Registry
from tfx_quantization.settings import GateSettings, PushSettings
from tfx_quantization.tflite_evaluator import evaluate
from tfx_quantization.tfx_utils import begin_executor, resolve_contract, set_properties, single, split_uri

log = logging.getLogger(__name__)


def open_registry(registry_json: Optional[str]) -> Tuple[Optional[Registry], Optional[PushSettings]]:
    """The registry the evaluator's `registry` parameter names, and its settings ((None,
    None) without one). Raises SettingsError when it lacks a destination or model name."""
    if not registry_json:
        return None, None
    push = PushSettings.from_json(registry_json)
    push.check_complete()
    return Registry(push.destination, push.model_name), push


def registry_history(registry_json: Optional[str]) -> List[dict]:
    """The registry's versions, oldest first, with the figures their manifests recorded."""
    registry, _ = open_registry(registry_json)
    return registry.list() if registry else []


def deployed_model(registry_json: Optional[str]) -> Tuple[Optional[str], dict]:
    """The .tflite file of the registry's LATEST version, and what its manifest says.

    The registry is the one truth for "what is deployed". A LATEST version that does not
    verify (bytes changed since the push) is refused with the reason: the no-regression
    check never compares against a model nobody can vouch for.
    """
    registry, push = open_registry(registry_json)
    if registry is None:
        return None, {}
    version = registry.latest()
    if version is None:
        log.info("No model deployed yet in %s: no-regression check skipped", registry.root)
        return None, {}
    problems = registry.verify(version, public_key=push.public_key)
    if problems:
        raise ValueError(
            f"the deployed version {version} in {registry.root} does not verify ({'; '.join(problems)}): refusing to "
            "use it as the no-regression baseline; roll back to an intact version "
            "(tfx-quantization-registry ... rollback N) or repair the registry")
    manifest = registry.manifest(version)
    return fsutil.join(registry.version_dir(version), contracts.MODEL_FILE), {
        "version_dir": registry.version_dir(version), "version": str(version), "variant": manifest.get("variant"),
        "recorded_metrics": manifest.get("metrics", {})}


def train_split(examples) -> Optional[str]:
    """The examples' train split folder, or None when they have none."""
    names = artifact_utils.decode_split_names(examples.split_names)
    return artifact_utils.get_split_uri([examples], contracts.TRAIN_SPLIT) if contracts.TRAIN_SPLIT in names else None


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        begin_executor("TFLiteEvaluator")
        self._log_startup(input_dict, output_dict, exec_properties)
        settings = GateSettings.from_json(exec_properties["settings"]).with_overrides(exec_properties.get("overrides"))
        examples = single(input_dict, "examples")
        model = single(input_dict, "model")
        quantized = single(input_dict, "quantized_models")
        evaluation_artifact = single(output_dict, "evaluation")
        blessing = single(output_dict, "blessing")
        eval_split_dir = split_uri(examples, settings.eval_split)
        registry, _ = open_registry(exec_properties.get("registry"))
        baseline_path, baseline_info = deployed_model(exec_properties.get("registry"))

        result = evaluate.evaluate_models(
            eval_split_dir=eval_split_dir,
            float_model_dir=path_utils.serving_model_path(model.uri),
            quantized_dir=quantized.uri,
            out_dir=evaluation_artifact.uri,
            params=settings,
            pipeline_factory=self._make_beam_pipeline,
            baseline_tflite=baseline_path,
            baseline_info=baseline_info,
            history=registry_history(exec_properties.get("registry")),
            # The parameter, else the contract the quantizer recorded, else the float model's
            # (artifact, else the file next to it).
            contract=resolve_contract(exec_properties.get("contract"), quantized, model),
            # A regression's sanity reference is the training labels' mean.
            train_split_dir=train_split(examples),
        )
        selected = result.selected_variant
        summary = {
            contracts.BLESSED: int(result.blessed),
            contracts.SELECTED_VARIANT: selected or "",
            contracts.FLOAT_ACCURACY: result.float_model.get(result.metric),
            contracts.VERDICTS: {n: v.model_dump() for n, v in result.verdicts.items()},
            contracts.NUM_THREADS: settings.num_threads,
            contracts.TARGET_SELECTIONS: {n: t.selected for n, t in result.targets.items()},
        }
        fig = result.selected_figures()
        if fig:
            summary.update({
                contracts.SELECTED_ACCURACY: fig.get(result.metric),
                contracts.SELECTED_ACCURACY_DROP: fig.get("accuracy_drop"),
                contracts.SELECTED_SIZE_BYTES: fig["size_bytes"],
                contracts.SELECTED_LATENCY_MS: fig["latency_ms_median"],
            })
        set_properties(evaluation_artifact, summary)
        set_properties(blessing, summary)
        # current_model_id names the quantized models, so that TFX's LatestBlessedModelStrategy
        # (and a stock Pusher behind it) resolves the artifact holding the blessed TFLite model.
        set_properties(blessing, {contracts.CURRENT_MODEL_ID: quantized.id, contracts.FLOAT_MODEL_ID: model.id,
                                  contracts.QUANTIZED_MODELS_ID: quantized.id,
                                  contracts.QUANTIZED_MODELS_URI: quantized.uri,
                                  contracts.EVALUATED_REGISTRY: registry.root if registry else ""})
        fsutil.write_bytes_atomic(fsutil.join(
            blessing.uri, contracts.BLESSED_FILE if result.blessed else contracts.NOT_BLESSED_FILE), b"")
        if selected:
            log.info("TFLiteEvaluator: blessed %s", selected)
        else:
            log.warning("TFLiteEvaluator: nothing passed the gate: %s",
                        {n: v.reasons for n, v in result.verdicts.items()})
