"""Compiles the pipeline for Kubeflow Pipelines v2 into a YAML PipelineSpec.

    .venv/bin/python -m kubeflow.runner --image REGISTRY/tfx-quantization:TAG \\
        --pipeline-root gs://BUCKET/pipeline_root [--output-dir kubeflow/build]

The same create_pipeline() as the local runner, with in-container paths: the image holds
this project at /pipeline (kubeflow/Dockerfile), so the digits data is at
/pipeline/data/digits; models are pushed to a mounted volume (default /mnt/models). Any
other setting comes from QP_* environment variables, as for the local runner.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import components  # noqa: F401
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from pipeline.config import PipelineConfig
from pipeline.dag import create_pipeline

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "build"
OUTPUT_FILE = "pipeline.yaml"
IMAGE_PROJECT_ROOT = "/pipeline"  # where kubeflow/Dockerfile puts this project
DATA_ROOT = f"{IMAGE_PROJECT_ROOT}/data/digits"
PUSH_DESTINATION = "/mnt/models"


def kubeflow_config(pipeline_root: str, environ=None) -> PipelineConfig:
    """The container's data root and push destination unless QP_* settings name others,
    then the pipeline root."""
    environ = dict(os.environ if environ is None else environ)
    config = PipelineConfig.from_env(environ, pipeline_root=pipeline_root)
    defaults = PipelineConfig.from_env({}, pipeline_root=pipeline_root)
    overrides = {}
    if config.data_root == defaults.data_root:
        overrides["data_root"] = DATA_ROOT
    if config.push.destination == defaults.push.destination:
        overrides["push"] = {"destination": PUSH_DESTINATION}
    return PipelineConfig.from_env(environ, pipeline_root=pipeline_root, **overrides) if overrides else config


def compile_pipeline(
    image: str,
    pipeline_root: str,
    output_dir: str | Path = BUILD_DIR,
    environ=None,
) -> Path:
    if not image:
        raise ValueError("--image is empty: name the container image built from kubeflow/Dockerfile")
    if "://" not in pipeline_root:
        raise ValueError(
            f"pipeline root {pipeline_root!r} is not an object-store URI: Kubeflow steps run in separate "
            "pods, so artifacts must live in shared storage (gs://…, s3://…, minio://…)"
        )
    config = kubeflow_config(pipeline_root, environ)
    # Kubeflow keeps ML Metadata itself: no sqlite store in the spec.
    pipeline = create_pipeline(config, local_metadata=False)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=str(output_dir),
        output_filename=OUTPUT_FILE,
    )
    runner.run(pipeline)
    return Path(output_dir) / OUTPUT_FILE


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Compile the pipeline for Kubeflow Pipelines v2 (YAML).")
    parser.add_argument("--image", default=os.environ.get("KF_IMAGE", ""),
                        help="container image with this project installed (env KF_IMAGE)")
    parser.add_argument("--pipeline-root", default=os.environ.get("KF_PIPELINE_ROOT", ""),
                        help="object-store pipeline root, e.g. gs://bucket/root (env KF_PIPELINE_ROOT)")
    parser.add_argument("--output-dir", default=str(BUILD_DIR))
    args = parser.parse_args(argv)
    try:
        path = compile_pipeline(args.image, args.pipeline_root, args.output_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
