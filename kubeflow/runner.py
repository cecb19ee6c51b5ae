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
  defaults: `data_root`, `input_config`, `gate_overrides`, `push_settings`;
- from the `kubeflow` settings (pipeline/config.py:KubeflowSettings), pipeline-wide or per
  step: every step's CPU and memory requests and limits, environment variables (the
  container's `env`), Kubernetes secrets as environment variables or files (a second YAML
  document: the PlatformSpec's `platforms.kubernetes`, as kfp-kubernetes' use_secret_as_env
  and use_secret_as_volume write it), and a retry policy on every task;
- the evaluator's report and gate figures as outputs the KFP UI renders
  (kubeflow/ui_outputs.py), no caching for the evaluator and the pusher, and every step
  started through kubeflow/entrypoint.py.
Settings come from QP_CONFIG (make kubeflow: the bundled digits job by default) and QP_*
variables, as for the local runner; a relative data_root names a folder of the project in
the image (data/digits: /src/data/digits, baked in).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml
from google.protobuf import json_format

from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

from tfx_quantization import fsutil
from tfx_quantization.settings import SettingsError
from tfx_quantization.kubeflow import ui_outputs
from tfx_quantization.pipeline.config import (
    CONFIG_FILE_VAR, STEP_FIELDS, KubeflowSettings, PipelineConfig, read_config_file,
)
from tfx_quantization.pipeline.dag import RuntimeParameters, create_pipeline

HERE = Path(__file__).resolve().parent
BUILD_DIR = HERE / "build"
OUTPUT_FILE = "pipeline.yaml"
IMAGE_PROJECT_ROOT = "/src"  # where kubeflow/Dockerfile puts this project
ENTRYPOINT = ["python", "-m", "tfx_quantization.kubeflow.entrypoint"]
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


def retry_policy(kf: KubeflowSettings) -> dict:
    """A task's retryPolicy (PipelineTaskSpec.RetryPolicy, as kfp's set_retry writes it)."""
    return {"maxRetryCount": kf.max_retries, "backoffDuration": f"{kf.retry_backoff_seconds}s",
            "backoffFactor": kf.retry_backoff_factor, "backoffMaxDuration": f"{kf.retry_backoff_max_seconds}s"}


def executor_config(secrets) -> dict:
    """One executor's KubernetesExecutorConfig (kfp-kubernetes' own message, as its
    use_secret_as_env and use_secret_as_volume write it) as the spec's JSON: each secret's
    keys as environment variables (secret_as_env) and, with a mount_path, as files in that
    folder (secret_as_volume)."""
    return json_format.MessageToDict(k8s_pb.KubernetesExecutorConfig(
        secret_as_env=[k8s_pb.SecretAsEnv(secret_name=s.secret_name, key_to_env=[
            k8s_pb.SecretAsEnv.SecretKeyToEnvMap(secret_key=k, env_var=v) for k, v in s.key_to_env.items()])
            for s in secrets if s.key_to_env],
        secret_as_volume=[k8s_pb.SecretAsVolume(secret_name=s.secret_name, mount_path=s.mount_path)
                          for s in secrets if s.mount_path]))


def platform_spec(spec: dict, kf: KubeflowSettings) -> Optional[dict]:
    """The Kubernetes PlatformSpec giving each executor its step's secrets
    (kf.secrets_of: the pipeline-wide ones and the step's own; executor_config); None when
    no step has one."""
    executors = {}
    for name, task in spec["root"]["dag"]["tasks"].items():
        secrets = kf.secrets_of(name)
        if secrets:  # a config of its own each: no YAML aliases
            executors[spec["components"][task["componentRef"]["name"]]["executorLabel"]] = executor_config(secrets)
    if not executors:
        return None
    platform = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())  # the shape KFP reads
    return platform


def finalize_spec(spec: dict, pipeline_root: str, params: RuntimeParameters, kf: KubeflowSettings) -> dict:
    """What the TFX compiler leaves out, added to the PipelineSpec dict."""
    spec["defaultPipelineRoot"] = pipeline_root
    inputs = spec["root"].setdefault("inputDefinitions", {}).setdefault("parameters", {})
    for name in RuntimeParameters.NAMES:
        inputs[name]["defaultValue"] = getattr(params, name).default
    tasks = spec["root"]["dag"]["tasks"]
    for task in UNCACHED:
        tasks[task]["cachingOptions"] = {"enableCache": False}
    executors = spec["deploymentSpec"]["executors"]
    for name, task in tasks.items():
        task["retryPolicy"] = retry_policy(kf)
        # Here, not through TFX's platform_config, which its compiler drops for ExampleGen.
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        container = executors[label]["container"]
        container["resources"] = container_resources(kf.resources_of(name))
        env = kf.env_of(name)
        if env:
            container["env"] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    for name, executor in spec["deploymentSpec"]["executors"].items():
        container = executor.get("container")
        if container is not None:
            container["command"] = list(ENTRYPOINT)
    ui_outputs.declare(spec)
    return spec


def check_step_names(pipeline, kf: KubeflowSettings) -> None:
    """A step name in kubeflow.step_env, step_secrets or step_resources that is no step of
    the pipeline is refused."""
    ids = [c.id for c in pipeline.components]
    for field in STEP_FIELDS:
        unknown = sorted(set(getattr(kf, field)) - set(ids))
        if unknown:
            raise ValueError(f"kubeflow.{field} (QP_KUBEFLOW__{field.upper()}) names {unknown}, which are not steps "
                             f"of this pipeline: use the steps' names, {ids}")


def container_resources(resources) -> dict:
    """A container's ResourceSpec (cores, GB) as the spec's JSON."""
    return json_format.MessageToDict(ResourceSpec(**resources.model_dump()))


def compile_pipeline(
    image: str,
    pipeline_root: str,
    push_destination: str,
    output_dir: str | Path = BUILD_DIR,
    environ=None,
) -> Path:
    problems = []  # every name that is missing or wrong, in one message
    for check, args in ((_check_not_placeholder, ("container image", image, "--image",
                                                  "ghcr.io/my-org/tfx-quantization:1.0")),
                        (_check_object_store, ("pipeline root", pipeline_root, "--pipeline-root")),
                        (_check_object_store, ("push destination", push_destination, "--push-destination"))):
        try:
            check(*args)
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise ValueError("; ".join(problems))
    config = kubeflow_config(pipeline_root, push_destination, environ)
    params = RuntimeParameters.for_config(config)
    # Kubeflow keeps ML Metadata itself: no sqlite store in the spec.
    pipeline = create_pipeline(config, local_metadata=False, params=params)
    check_step_names(pipeline, config.kubeflow)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image, use_pipeline_spec_2_1=True),
        output_dir=str(output_dir), output_filename=OUTPUT_FILE)
    job = runner.run(pipeline, write_out=False)
    spec = finalize_spec(job["pipelineSpec"], pipeline_root, params, config.kubeflow)
    platform = platform_spec(spec, config.kubeflow)
    os.makedirs(output_dir, exist_ok=True)
    path = Path(output_dir) / OUTPUT_FILE
    # kfp's layout: the PipelineSpec, then the PlatformSpec as a second document.
    path.write_text(yaml.safe_dump_all([spec] + ([platform] if platform else []), sort_keys=True))
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
