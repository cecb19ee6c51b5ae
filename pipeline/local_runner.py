"""Runs the pipeline on the local orchestrator.

Works three ways:
  tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
  tfx run create --engine local --pipeline_name digits-quantization
  python pipeline/local_runner.py        (or python -m pipeline.local_runner)
Settings come from pipeline/config.py and QP_* environment variables.
"""
import sys
from pathlib import Path

# Run as a script (which is how `tfx run create` runs it), this file's folder comes first
# on sys.path, and pipeline/pipeline.py would shadow the `pipeline` package.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "pipeline"]
sys.path.insert(0, str(_ROOT))

import os  # noqa: E402

from tfx import v1 as tfx  # noqa: E402

from pipeline import logs, summary  # noqa: E402
from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402


def _execution_count(metadata_path: str) -> int:
    if not os.path.exists(metadata_path):
        return 0
    return len(summary.open_store(metadata_path).get_executions())


def main() -> None:
    logs.configure()
    config = PipelineConfig.from_env()
    before = _execution_count(config.metadata_path)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))
    # `tfx pipeline create` executes this file with run() patched out: no summary then.
    if _execution_count(config.metadata_path) > before:
        text = summary.summarize(config.metadata_path)
        if text:
            print("\n" + text, flush=True)


if __name__ == "__main__":
    main()
