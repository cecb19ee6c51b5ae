"""Runs the pipeline on the local orchestrator.

Works three ways:
  tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
  tfx run create --engine local --pipeline_name digits-quantization
  python pipeline/local_runner.py        (or python -m tfx_quantization.pipeline.local_runner, with the package installed)
Settings come from pipeline/config.py: QP_CONFIG (a YAML/JSON file) and QP_* variables.
Run as a script, this file's folder (pipeline/) is first on sys.path; everything it imports
comes from the installed `tfx_quantization` package (the Makefile's editable install), so
nothing in that folder shadows anything.
"""
import os
import sys

from tfx import v1 as tfx

from tfx_quantization import fsutil
from tfx_quantization.pipeline import logs, outcome, preflight, summary
from tfx_quantization.settings import SettingsError
from tfx_quantization.pipeline.config import PipelineConfig
from tfx_quantization.pipeline.dag import create_pipeline


def _execution_count(metadata_path: str) -> int:
    if not os.path.exists(metadata_path):
        return 0
    return len(summary.open_store(metadata_path).get_executions())


def main() -> int:
    logs.configure()
    try:
        config = PipelineConfig.from_env()
        preflight.check(config)  # the inputs and the destination, before any stage runs
    except (SettingsError, preflight.PreflightError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    if config.uses_s3():
        fsutil.register_filesystems()  # s3:// for TFX's own file IO too (tensorflow-io)
    before = _execution_count(config.metadata_path)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    # `tfx pipeline create` executes this file with run() patched out: no summary then.
    if _execution_count(config.metadata_path) > before:
        text = summary.summarize(config.metadata_path)
        if text:
            print("\n" + text, flush=True)
        outcome.write(config)  # <output_root>/outcome.json; tfx-quantization-outcome gives the exit status
    return 0


if __name__ == "__main__":
    fsutil.exit_process(main())  # a stage's error exits 1 with its traceback
