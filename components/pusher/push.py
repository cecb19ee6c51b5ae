"""What the Pusher does, as a plain function: check the blessing, build the manifest,
publish the selected variant to the registry."""
from __future__ import annotations

import logging
import platform
from typing import Dict, Optional

from tfx_quantization import contracts
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
    evaluation_metrics: Optional[Dict] = None,
    lineage: Optional[Dict] = None,
) -> Dict:
    """Returns {'pushed': bool, 'reason', 'version', 'version_dir', 'deployed_version_dir'}."""
    settings.check_complete()
    registry = Registry(settings.destination, settings.model_name)
    latest = registry.latest()
    deployed = str(registry.version_dir(latest)) if latest is not None else ""
    if not blessed:
        return {"pushed": False, "reason": "the evaluation did not bless any variant", "deployed_version_dir": deployed}
    manifest = contracts.read_manifest(quantized_dir)
    model_path = contracts.variant_path(quantized_dir, manifest, selected_variant)
    entry = manifest["variants"][selected_variant]
    metrics = evaluation_metrics or {}
    push_manifest = {
        "model_name": settings.model_name,
        "variant": selected_variant,
        "metrics": metrics.get("variants", {}).get(selected_variant, {}),
        "float_model_metrics": metrics.get("float_model", {}),
        "gate_settings": metrics.get("settings", {}),
        "verdict": metrics.get("verdicts", {}).get(selected_variant, {}),
        "model": {k: entry.get(k) for k in ("inputs", "outputs", "converter_settings", "device_class", "op_counts")},
        "model_spec": manifest.get("model_spec", {}),
        "lineage": dict(lineage or {}),
        "library_versions": library_versions(),
    }
    version, created = registry.push(model_path, push_manifest, signing_key=settings.signing_key)
    # The targets after the main registry: its LATEST is the evaluator's no-regression baseline.
    targets = push_targets(quantized_dir, manifest, push_manifest, metrics.get("targets") or {},
                           metrics.get("variants", {}), settings)
    version_dir = str(registry.version_dir(version))
    if created:
        log.info("Pushed %s as version %d: %s", selected_variant, version, version_dir)
        reason = f"pushed {selected_variant} as version {version}"
    else:
        log.info("Version %d already holds these bytes: nothing new pushed", version)
        reason = f"version {version} already holds the same model (sha256): nothing new pushed"
    return {"pushed": created, "reason": reason, "version": version, "version_dir": version_dir,
            "deployed_version_dir": version_dir, "targets": targets}


def push_targets(quantized_dir: str, manifest: Dict, base_manifest: Dict, targets: Dict[str, Dict],
                 figures: Dict[str, Dict], settings: PushSettings) -> Dict[str, Dict]:
    """Each deployment target's selected variant into the target's own registry
    (<destination>/<model>/targets/<target>/), so that a device fleet pulls "the current model
    for mcu" from its LATEST. Idempotent per target like the main push."""
    out = {}
    for target, decision in targets.items():
        variant = decision.get("selected")
        if not variant:
            out[target] = {"variant": None, "reason": decision.get("selection", {}).get("why", "no variant")}
            continue
        registry = open_registry(settings.destination, settings.model_name, target)
        target_manifest = dict(
            base_manifest, variant=variant, target=target, target_settings=decision.get("settings", {}),
            verdict=decision["verdicts"][variant], metrics=figures.get(variant, {}),
            model={k: manifest["variants"][variant].get(k)
                   for k in ("inputs", "outputs", "converter_settings", "device_class", "op_counts")})
        version, created = registry.push(contracts.variant_path(quantized_dir, manifest, variant), target_manifest,
                                         signing_key=settings.signing_key)
        log.info("Target %s: %s %s as version %d", target, "pushed" if created else "already holds", variant, version)
        out[target] = {"variant": variant, "version": version, "created": created,
                       "version_dir": str(registry.version_dir(version))}
    return out
