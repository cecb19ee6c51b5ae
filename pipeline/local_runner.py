"""Runs the pipeline on the local orchestrator.

Works three ways:
  tfx pipeline create --engine local --pipeline_path pipeline/local_runner.py
  tfx run create --engine local --pipeline_name digits-quantization
  python pipeline/local_runner.py        (or python -m pipeline.local_runner)
"""
import sys
from pathlib import Path

# Run as a script (which is how `tfx run create` runs it), this file's folder comes first
# on sys.path, and pipeline/pipeline.py would shadow the `pipeline` package.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "pipeline"]
sys.path.insert(0, str(_ROOT))

import logging  # noqa: E402

from absl import logging as absl_logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from pipeline.config import PipelineConfig  # noqa: E402
from pipeline.pipeline import create_pipeline  # noqa: E402


def main() -> None:
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger().setLevel(logging.INFO)
    config = PipelineConfig.from_env()
    tfx.orchestration.LocalDagRunner().run(create_pipeline(config))


if __name__ == "__main__":
    main()
