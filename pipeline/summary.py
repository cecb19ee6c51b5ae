"""What a run produced, read back from ML Metadata: for the end of `make run` and tests."""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from tfx_quantization import contracts, fsutil


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return metadata_store.MetadataStore(config)


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def props(artifact) -> Dict[str, object]:
    return {k: _value(v) for k, v in artifact.custom_properties.items()}


def executions(store) -> List[Dict[str, object]]:
    types = {t.id: t.name.rsplit(".", 1)[-1] for t in store.get_execution_types()}
    return [
        {"id": e.id, "component": types[e.type_id], "state": metadata_store_pb2.Execution.State.Name(e.last_known_state),
         "seconds": (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0}
        for e in store.get_executions()
    ]


def stage_seconds(store) -> Dict[str, str]:
    """Each stage of the newest pipeline run: its duration, or 'cached'."""
    runs = store.get_contexts_by_type("pipeline_run")
    if not runs:
        return {}
    run = max(runs, key=lambda c: c.id)
    types = {t.id: t.name.rsplit(".", 1)[-1] for t in store.get_execution_types()}
    out = {}
    for e in sorted(store.get_executions_by_context(run.id), key=lambda e: e.id):
        if e.last_known_state == metadata_store_pb2.Execution.CACHED:
            out[types[e.type_id]] = "cached"
        else:
            out[types[e.type_id]] = f"{(e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000:.1f} s"
    return out


def latest_artifact(store, type_name: str):
    artifacts = store.get_artifacts_by_type(type_name)
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def _figure_line(metric: str, ev: dict) -> str:
    """'accuracy 0.9777 (float 0.9777, drop +0.00 pp)', or for an error metric its increase in
    label units; a label-free model's fidelity figure alone."""
    from tfx_quantization.quantization import metrics

    value, reference = ev.get(contracts.SELECTED_ACCURACY), ev.get(contracts.FLOAT_ACCURACY)
    degradation = ev.get(contracts.SELECTED_ACCURACY_DROP)
    if value is None or reference is None or degradation is None:
        return f"{metric} {value:.4f}" if isinstance(value, float) else "(no labelled metric: judged by fidelity)"
    if metrics.METRICS[metric].higher_is_better:
        return f"{metric} {value:.4f} (float {reference:.4f}, drop {100 * degradation:+.2f} pp)"
    return f"{metric} {value:.4f} (float {reference:.4f}, increase {degradation:+.4f} in label units)"


def summarize(metadata_path: str) -> Optional[str]:
    """A few lines: selected variant, accuracy and drop, size, latency, pushed version and
    path, report path. None when the store has no evaluation yet."""
    if not os.path.exists(metadata_path):
        return None
    store = open_store(metadata_path)
    evaluation = latest_artifact(store, "ModelEvaluation")
    pushed = latest_artifact(store, "PushedModel")
    if evaluation is None:
        return None
    ev = props(evaluation)
    decision = (contracts.read_decision(evaluation.uri)
                if fsutil.exists(fsutil.join(evaluation.uri, contracts.OUTCOME_FILE)) else None)
    lines = []
    selected = ev.get(contracts.SELECTED_VARIANT)
    float_acc = ev.get(contracts.FLOAT_ACCURACY)
    if selected:
        lines.append(f"Selected variant : {selected}  {_figure_line(decision.metric if decision else 'accuracy', ev)}")
        lines.append(
            f"Size, latency    : {ev[contracts.SELECTED_SIZE_BYTES]} bytes, {ev[contracts.SELECTED_LATENCY_MS]:.4f} ms "
            f"median per example (host CPU, XNNPACK, {ev.get(contracts.NUM_THREADS, 1)} thread(s))"
        )
    else:
        # The decision's reasons name what decided (a target's budget, or each variant's
        # gate verdict); the gate's verdicts alone when the run wrote no outcome.json.
        verdicts = json.loads(ev.get(contracts.VERDICTS, "{}"))
        reasons = decision.why if decision and decision.why else [
            f"{name}: {'; '.join(v['reasons'])}" for name, v in verdicts.items()]
        primary = next(iter(decision.targets), None) if decision else None  # the first target decides
        checks = f" and target {primary}'s checks" if primary else ""
        lines.append(f"Selected variant : none passed the gate{checks}, so nothing was pushed")
        for reason in reasons:
            lines.append(f"  {reason}")
    push = contracts.read_push_result(props(pushed)) if pushed is not None else None
    if push is not None:
        if push.pushed:
            lines.append(f"Pushed           : version {push.version} at {push.deployed_version_dir}")
        else:
            lines.append(f"Pushed           : no ({push.reason})")
            if push.deployed_version_dir:
                lines.append(f"Serving          : {push.deployed_version_dir} (the registry's LATEST, unchanged)")
    for target, variant in json.loads(ev.get(contracts.TARGET_SELECTIONS, "{}")).items():
        where = push.targets.get(target) if push else None
        shown = f"{variant} (version {where.version} at {where.version_dir})" if where and where.version else (
            variant or "none passed the gate and this target's checks")
        lines.append(f"Target {target:<10}: {shown}")
    if selected and decision and decision.why:
        lines.append(f"Why              : {decision.why[0]}")
    for name, reason in (decision.skipped if decision else {}).items():  # not built by design: not a failure
        lines.append(f"Skipped          : {name}: {reason}")
    for warning in decision.warnings if decision else []:
        lines.append(f"WARNING          : {warning}")
    lines.append(f"Report           : {fsutil.join(evaluation.uri, contracts.REPORT_FILE)}")
    stages = stage_seconds(store)
    if stages:
        lines.append("Stages           : " + ", ".join(f"{name} {took}" for name, took in stages.items()))
    return "\n".join(lines)
