"""The run's outcome for automation: <output_root>/outcome.json, and an opt-in exit status.

    tfx-quantization-outcome    prints the newest run's outcome (JSON); exits 3 when
                                QP_FAIL_IF_NOTHING_PUSHED=1 and the run left no blessed
                                model deployed (0 otherwise)

The outcome joins the evaluator's decision (its outcome.json, next to report.html: blessed,
why, warnings, shift) with what the pusher did (pushed version, or why not), read from ML
Metadata. The local runner writes it after every run; `make run` then calls this module,
because the TFX CLI turns every non-zero status of the pipeline script into 1.
"""
from __future__ import annotations

import json
import sys
from typing import Optional

from tfx_quantization import contracts, fsutil
from tfx_quantization.settings import SettingsError
from tfx_quantization.pipeline import summary
from tfx_quantization.pipeline.config import PipelineConfig

NOTHING_PUSHED_EXIT = 3


def run_outcome(metadata_path: str) -> Optional[dict]:
    """The newest run's outcome from ML Metadata, or None before any evaluation."""
    store = summary.open_store(metadata_path) if fsutil.exists(metadata_path) else None
    evaluation = summary.latest_artifact(store, "ModelEvaluation") if store else None
    if evaluation is None:
        return None
    decision_path = fsutil.join(evaluation.uri, contracts.OUTCOME_FILE)
    outcome = fsutil.read_json(decision_path) if fsutil.exists(decision_path) else {
        "blessed": bool(summary.props(evaluation).get(contracts.BLESSED))}
    pushed = summary.latest_artifact(store, "PushedModel")
    p = summary.props(pushed) if pushed is not None else {}
    outcome.update(
        report=fsutil.join(evaluation.uri, contracts.REPORT_FILE),
        pushed=p.get(contracts.PUSHED) == 1,
        pushed_version=int(p[contracts.PUSHED_VERSION]) if p.get(contracts.PUSHED) == 1 else None,
        push_reason=p.get(contracts.REASON, ""),
        deployed_version_dir=p.get(contracts.DEPLOYED_VERSION_DIR) or p.get(contracts.PUSHED_DESTINATION),
    )
    # Blessed and already in the registry (same bytes): deployed, though nothing new was pushed.
    outcome["deployed"] = bool(outcome["blessed"] and (outcome["pushed"] or "already holds" in outcome["push_reason"]))
    return outcome


def write(config: PipelineConfig) -> Optional[dict]:
    outcome = run_outcome(config.metadata_path)
    if outcome is not None:
        fsutil.write_bytes_atomic(fsutil.join(config.output_root, contracts.OUTCOME_FILE), fsutil.to_json(outcome))
    return outcome


def exit_status(config: PipelineConfig, outcome: Optional[dict]) -> int:
    if config.fail_if_nothing_pushed and not (outcome and outcome["deployed"]):
        return NOTHING_PUSHED_EXIT
    return 0


def main() -> int:
    try:
        config = PipelineConfig.from_env()
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if config.uses_s3():
        fsutil.register_filesystems()
    path = fsutil.join(config.output_root, contracts.OUTCOME_FILE)
    outcome = fsutil.read_json(path) if fsutil.exists(path) else write(config)
    if outcome is None:
        print(f"no run has been evaluated yet under {config.output_root}", file=sys.stderr)
        return exit_status(config, None)
    print(json.dumps(outcome, indent=2, sort_keys=True))
    status = exit_status(config, outcome)
    if status:
        print(f"nothing deployed by this run (QP_FAIL_IF_NOTHING_PUSHED is on): see {path}", file=sys.stderr)
    return status


def console_main() -> None:
    """The console script's entry point: main(), leaving without the interpreter's teardown
    (fsutil.exit_process: tensorflow-io can abort at exit after S3 use)."""
    fsutil.exit_process(main())


if __name__ == "__main__":
    console_main()
