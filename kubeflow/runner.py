"""Compiles the pipeline for Kubeflow Pipelines v2 (open-source KFP and Vertex AI) into a
YAML PipelineSpec.

    .venv/bin/tfx-quantization-kubeflow-compile --image REGISTRY/tfx-quantization:TAG \\
        --pipeline-root s3://BUCKET/root --push-destination s3://BUCKET/serving [--output-dir kubeflow/build]

The same create_pipeline() as the local runner, with:
- no resolver or importer node (open-source KFP rejects resolver executors): the evaluator
  reads the deployed baseline from the registry at the push destination;
- the pipeline root in the spec (`defaultPipelineRoot`) and the push destination, both on
  object storage, so every step's pod and the next run see them;
- runtime parameters (see pipeline/dag.py:RuntimeParameters) with the compiled values as
  defaults: `gate_overrides`, `push_settings`, `input_config`;
- CPU/memory requests and limits for the trainer and the evaluator, no caching for the
  pusher, and every step started through kubeflow/entrypoint.py.
Settings come from QP_CONFIG (make kubeflow: the bundled digits job by default) and QP_*
variables, as for the local runner; a relative data_root names a folder of the project in
the image (data/digits: /src/data/digits, baked in).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import yaml

from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from tfx_quantization import fsutil
from tfx_quantization.settings import SettingsError
from tfx_quantization.pipeline.config import CONFIG_FILE_VAR, PipelineConfig, read_config_file
from tfx_quantization.pipeline.dag import RuntimeParameters, create_pipeline

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "build"
OUTPUT_FILE = "pipeline.yaml"
IMAGE_PROJECT_ROOT = "/src"  # where kubeflow/Dockerfile puts this project
ENTRYPOINT = ["python", "-m", "tfx_quantization.kubeflow.entrypoint"]
# Requests = limits, so the scheduler reserves what the step uses (cores, GB of memory).
RESOURCES: Dict[str, Dict[str, float]] = {
    "QATTrainer": {"cpu_request": 2, "cpu_limit": 2, "memory_request": 8, "memory_limit": 8},
    "TFLiteEvaluator": {"cpu_request": 2, "cpu_limit": 2, "memory_request": 4, "memory_limit": 4},
}
# Both read the registry, which changes between runs outside any task's inputs.
UNCACHED = ("TFLiteEvaluator", "QuantizedModelPusher")
ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec
PLACEHOLDERS = ("YOUR_", "REGISTRY/", "BUCKET", "example.com", "<", ">")


def _check_not_placeholder(what: str, value: str, flag: str, example: str) -> None:
    if not value:
        raise ValueError(f"{flag} is empty: name the {what}, e.g. {example}")
    if any(p in value for p in PLACEHOLDERS):
        raise ValueError(f"{flag}={value!r} is a placeholder: name your real {what}, e.g. {example}")


def _check_object_store(what: str, uri: str, flag: str) -> None:
    _check_not_placeholder(what, uri, flag, f"s3://my-bucket/{what.replace(' ', '_')}")
    if not fsutil.is_remote(uri):
        raise ValueError(
            f"{flag}={uri!r} is not an object-store URI: Kubeflow steps run in separate pods and runs, so the "
            f"{what} must be shared storage (s3://…, gs://…)")


def kubeflow_config(pipeline_root: str, push_destination: str, environ=None) -> PipelineConfig:
    """The configuration as for a local run (QP_CONFIG, QP_* variables), then the pipeline
    root and push destination. A relative data_root (the bundled job's `data/digits`) names a
    folder of the project in the image (IMAGE_PROJECT_ROOT), not of the compiling machine."""
    environ = dict(os.environ if environ is None else environ)
    overrides = dict(pipeline_root=pipeline_root, push={"destination": push_destination})
    data_root = environ.get("QP_DATA_ROOT") or (
        read_config_file(environ[CONFIG_FILE_VAR]).get("data_root") if environ.get(CONFIG_FILE_VAR) else None)
    if data_root and not fsutil.is_remote(data_root) and not os.path.isabs(data_root):
        overrides["data_root"] = f"{IMAGE_PROJECT_ROOT}/{data_root}"
    return PipelineConfig.from_env(environ, **overrides)


def finalize_spec(spec: dict, pipeline_root: str, params: RuntimeParameters) -> dict:
    """What the TFX compiler leaves out, added to the PipelineSpec dict."""
    spec["defaultPipelineRoot"] = pipeline_root
    inputs = spec["root"].setdefault("inputDefinitions", {}).setdefault("parameters", {})
    for name in RuntimeParameters.NAMES:
        inputs[name]["defaultValue"] = getattr(params, name).default
    tasks = spec["root"]["dag"]["tasks"]
    for task in UNCACHED:
        tasks[task]["cachingOptions"] = {"enableCache": False}
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor.get("container")
        if container is None:
            continue
        container["command"] = list(ENTRYPOINT)
    return spec


def compile_pipeline(
    image: str,
    pipeline_root: str,
    push_destination: str,
    output_dir: str | Path = BUILD_DIR,
    environ=None,
) -> Path:
    _check_not_placeholder("container image", image, "--image", "ghcr.io/my-org/tfx-quantization:1.0")
    _check_object_store("pipeline root", pipeline_root, "--pipeline-root")
    _check_object_store("push destination", push_destination, "--push-destination")
    config = kubeflow_config(pipeline_root, push_destination, environ)
    params = RuntimeParameters.for_config(config)
    # Kubeflow keeps ML Metadata itself: no sqlite store in the spec.
    pipeline = create_pipeline(config, local_metadata=False, params=params)
    for component in pipeline.components:
        if component.id in RESOURCES:  # TFX's compiler writes it as the container's resources
            component.with_platform_config(ResourceSpec(**RESOURCES[component.id]))
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image, use_pipeline_spec_2_1=True),
        output_dir=str(output_dir), output_filename=OUTPUT_FILE)
    job = runner.run(pipeline, write_out=False)
    spec = finalize_spec(job["pipelineSpec"], pipeline_root, params)
    os.makedirs(output_dir, exist_ok=True)
    path = Path(output_dir) / OUTPUT_FILE
    path.write_text(yaml.safe_dump(spec, sort_keys=True))
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=os.environ.get("KF_IMAGE", ""),
                        help="container image built from kubeflow/Dockerfile (env KF_IMAGE)")
    parser.add_argument("--pipeline-root", default=os.environ.get("KF_PIPELINE_ROOT", ""),
                        help="object-store pipeline root, e.g. s3://bucket/root (env KF_PIPELINE_ROOT)")
    parser.add_argument("--push-destination", default=os.environ.get("KF_PUSH_DESTINATION", ""),
                        help="object-store registry, e.g. s3://bucket/serving (env KF_PUSH_DESTINATION)")
    parser.add_argument("--output-dir", default=str(BUILD_DIR))
    args = parser.parse_args(argv)
    try:
        path = compile_pipeline(args.image, args.pipeline_root, args.push_destination, args.output_dir)
    except (ValueError, SettingsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
