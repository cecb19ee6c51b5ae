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

import sys
from typing import Optional

from tfx_quantization import contracts, fsutil
from tfx_quantization.contracts import RunOutcome
from tfx_quantization.settings import SettingsError
from tfx_quantization.pipeline import summary
from tfx_quantization.pipeline.config import PipelineConfig

NOTHING_PUSHED_EXIT = 3


def run_outcome(metadata_path: str) -> Optional[RunOutcome]:
    """The newest run's outcome from ML Metadata, or None before any evaluation."""
    store = summary.open_store(metadata_path) if fsutil.exists(metadata_path) else None
    evaluation = summary.latest_artifact(store, "ModelEvaluation") if store else None
    if evaluation is None:
        return None
    if fsutil.exists(fsutil.join(evaluation.uri, contracts.OUTCOME_FILE)):
        decision = contracts.read_decision(evaluation.uri)
    else:
        decision = contracts.Decision(blessed=bool(summary.props(evaluation).get(contracts.BLESSED)))
    pushed = summary.latest_artifact(store, "PushedModel")
    push = contracts.read_push_result(summary.props(pushed)) if pushed is not None else None
    return contracts.RunOutcome(
        **decision.model_dump(exclude_unset=True),
        report=fsutil.join(evaluation.uri, contracts.REPORT_FILE),
        pushed=bool(push and push.pushed),
        pushed_version=push.version if push and push.pushed else None,
        push_reason=push.reason if push else "",
        deployed_version_dir=push.deployed_version_dir or None if push else None,
        # Blessed and in the registry: pushed now, or the same bytes were already deployed.
        deployed=bool(decision.blessed and push and (push.pushed or push.already_deployed)),
    )


def write(config: PipelineConfig) -> Optional[RunOutcome]:
    outcome = run_outcome(config.metadata_path)
    if outcome is not None:
        contracts.write_run_outcome(config.output_root, outcome)
    return outcome


def exit_status(config: PipelineConfig, outcome: Optional[RunOutcome]) -> int:
    if config.fail_if_nothing_pushed and not (outcome and outcome.deployed):
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
    outcome = contracts.read_run_outcome(config.output_root) if fsutil.exists(path) else write(config)
    if outcome is None:
        print(f"no run has been evaluated yet under {config.output_root}", file=sys.stderr)
        return exit_status(config, None)
    print(outcome.to_json())
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
