"""What the Pusher does, as a plain function: check the blessing, build the version's
manifest, publish the selected variant to the registry; the result is a PushResult."""
from __future__ import annotations

import logging
import platform
from typing import Dict, Optional

from tfx_quantization import contracts
from tfx_quantization.contracts import Evaluation, Manifest, PushResult, TargetPush
from tfx_quantization.registry import Registry, open_registry
from tfx_quantization.settings import PushSettings

log = logging.getLogger(__name__)


def library_versions() -> Dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for dist in ("tensorflow", "tfx", "tensorflow-model-optimization", "apache-beam", "tf-keras"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def push_selected(
    quantized_dir: str,
    blessed: bool,
    selected_variant: str,
    settings: PushSettings,
    evaluation: Optional[Evaluation] = None,
    lineage: Optional[Dict] = None,
    evaluated_registry: str = "",
) -> PushResult:
    """Publishes the selected variant to the registry (and each target's selection to the
    target's registry) when blessed. evaluation: the evaluator's record, whose figures,
    verdicts and gate settings each version's manifest keeps (None: none recorded).
    evaluated_registry: the registry whose deployed model the gate compared against ('':
    none given to the evaluator).

    Raises ValueError, before anything is written, when the evaluator read its baseline from
    another registry than this push's (the no-regression check would have judged against a
    model this registry does not serve)."""
    settings.check_complete()
    registry = Registry(settings.destination, settings.model_name)
    if evaluated_registry and evaluated_registry != registry.root:
        raise ValueError(
            f"the evaluator compared against the deployed model of {evaluated_registry}, but this pusher pushes to "
            f"{registry.root}: give TFLiteEvaluator(registry=...) and the pusher the same PushSettings (destination "
            "and model_name)")
    latest = registry.latest()
    deployed = str(registry.version_dir(latest)) if latest is not None else ""
    if not blessed:
        return PushResult(pushed=False, reason="the evaluation did not bless any variant", deployed_version_dir=deployed)
    manifest = contracts.read_manifest(quantized_dir)
    model_path = contracts.variant_path(quantized_dir, manifest, selected_variant)
    verdict = evaluation.verdicts.get(selected_variant) if evaluation else None
    push_manifest = {
        "model_name": settings.model_name,
        "variant": selected_variant,
        "metrics": evaluation.variants.get(selected_variant, {}) if evaluation else {},
        "float_model_metrics": evaluation.float_model if evaluation else {},
        "gate_settings": evaluation.settings if evaluation else {},
        "verdict": verdict.model_dump() if verdict else {},
        "model": manifest.variants[selected_variant].description(),
        "model_spec": manifest.model_spec,
        "lineage": dict(lineage or {}),
        "library_versions": library_versions(),
    }
    version, created = registry.push(model_path, push_manifest, signing_key=settings.signing_key)
    # The targets after the main registry: its LATEST is the evaluator's no-regression baseline.
    targets = push_targets(quantized_dir, manifest, push_manifest, evaluation, settings) if evaluation else {}
    version_dir = str(registry.version_dir(version))
    if created:
        log.info("Pushed %s as version %d: %s", selected_variant, version, version_dir)
        reason = f"pushed {selected_variant} as version {version}"
    else:
        log.info("Version %d already holds these bytes: nothing new pushed", version)
        reason = f"version {version} already holds the same model (sha256): nothing new pushed"
    return PushResult(pushed=created, already_deployed=not created, reason=reason, version=version,
                      deployed_version_dir=version_dir, targets=targets)


def push_targets(quantized_dir: str, manifest: Manifest, base_manifest: Dict, evaluation: Evaluation,
                 settings: PushSettings) -> Dict[str, TargetPush]:
    """Each deployment target's selected variant into the target's own registry
    (<destination>/<model>/targets/<target>/), so that a device fleet pulls "the current model
    for mcu" from its LATEST. Idempotent per target like the main push."""
    out = {}
    for target, decision in evaluation.targets.items():
        variant = decision.selected
        if not variant:
            out[target] = TargetPush(variant=None, reason=decision.selection.why)
            continue
        registry = open_registry(settings.destination, settings.model_name, target)
        target_manifest = dict(
            base_manifest, variant=variant, target=target, target_settings=decision.settings,
            verdict=decision.verdicts[variant].model_dump(), metrics=evaluation.variants.get(variant, {}),
            model=manifest.variants[variant].description())
        version, created = registry.push(contracts.variant_path(quantized_dir, manifest, variant), target_manifest,
                                         signing_key=settings.signing_key)
        log.info("Target %s: %s %s as version %d", target, "pushed" if created else "already holds", variant, version)
        out[target] = TargetPush(variant=variant, version=version, created=created,
                                 version_dir=str(registry.version_dir(version)))
    return out
