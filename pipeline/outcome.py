"""The run's outcome for automation: <output_root>/outcome.json, and an opt-in exit status.

    tfx-quantization-outcome [--metadata PATH] [--fail-if-nothing-pushed]
        prints the newest run's outcome (JSON). Without --metadata, the run of this
        project's configuration (QP_CONFIG / QP_* variables: <output_root>/outcome.json);
        with it, the newest run recorded in any ML Metadata sqlite file (a pipeline of
        your own). Exits 3 when asked to fail if nothing is deployed
        (QP_FAIL_IF_NOTHING_PUSHED=1 or the flag) and the run left no blessed model
        deployed; 4 when no evaluated run is found; 2 on a bad configuration or a --metadata
        file that does not exist; else 0.

The outcome joins the evaluator's decision (its outcome.json, next to report.html: blessed,
why, warnings, shift) with what the pusher did (pushed version, or why not), read from ML
Metadata. The local runner writes it after every run; `make run` then calls this module,
because the TFX CLI turns every non-zero status of the pipeline script into 1.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from tfx_quantization import contracts, fsutil
from tfx_quantization.contracts import RunOutcome
from tfx_quantization.settings import SettingsError
from tfx_quantization.pipeline import summary
from tfx_quantization.pipeline.config import PipelineConfig

NOTHING_PUSHED_EXIT = 3
NO_RUN_EXIT = 4


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


def exit_status(fail_if_nothing_pushed: bool, outcome: Optional[RunOutcome]) -> int:
    if outcome is None:
        return NO_RUN_EXIT
    if fail_if_nothing_pushed and not outcome.deployed:
        return NOTHING_PUSHED_EXIT
    return 0


def _arguments(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tfx-quantization-outcome", description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", help="an ML Metadata sqlite file (default: the configured pipeline's)")
    parser.add_argument("--fail-if-nothing-pushed", action="store_true",
                        help=f"exit {NOTHING_PUSHED_EXIT} unless the run left a blessed model deployed")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = _arguments(argv)
    if args.metadata:
        if not fsutil.exists(args.metadata):
            print(f"error: --metadata {args.metadata}: no such file (pass the ML Metadata sqlite file your pipeline's "
                  "metadata_connection_config names)", file=sys.stderr)
            return 2
        where, fail, path = args.metadata, args.fail_if_nothing_pushed, None
        outcome = run_outcome(args.metadata)
    else:
        try:
            config = PipelineConfig.from_env()
        except SettingsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if config.uses_s3():
            fsutil.register_filesystems()
        where, fail = config.output_root, args.fail_if_nothing_pushed or config.fail_if_nothing_pushed
        path = fsutil.join(config.output_root, contracts.OUTCOME_FILE)
        outcome = contracts.read_run_outcome(config.output_root) if fsutil.exists(path) else write(config)
    if outcome is None:
        print(f"no evaluated run found in {where}: run the pipeline first, or pass --metadata with the ML Metadata "
              "file your pipeline writes", file=sys.stderr)
        return exit_status(fail, None)
    print(outcome.to_json())
    status = exit_status(fail, outcome)
    if status:
        print(f"nothing deployed by this run (asked to fail if nothing is pushed): see {path or outcome.report}",
              file=sys.stderr)
    return status


def console_main() -> None:
    """The console script's entry point: main(), leaving without the interpreter's teardown
    (fsutil.exit_process: tensorflow-io can abort at exit after S3 use)."""
    fsutil.exit_process(main())


if __name__ == "__main__":
    console_main()
