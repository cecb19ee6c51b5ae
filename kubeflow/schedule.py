"""Uploads the compiled pipeline and creates (or replaces) its recurring run on Kubeflow.

    .venv/bin/tfx-quantization-kubeflow-schedule --host http://KFP_HOST --cron "0 0 2 * * *" \\
        [--package kubeflow/build/pipeline.yaml] [--pipeline-name digits-quantization] \\
        [--experiment digits-quantization] [--job-name digits-quantization-nightly] \
        [--pipeline-root s3://BUCKET/root] [--param gate_overrides='{"max_accuracy_drop": 0.005}'] [--dry-run]

The pipeline is uploaded, or, if one with that name exists, a new version of it. The
recurring run uses a 6-field cron (seconds first, as Kubeflow's scheduler reads it), at most
one run at a time, and no catch-up of missed runs; an existing recurring run with the same
name is deleted and created again on the new version. It carries the pipeline root (the
compiled one unless given) and any runtime parameter values. The cron, the parameter names
and the package are checked before anything is sent: the kfp client sends the cron as is and
only the server would refuse it, after the upload. --dry-run prints every call instead of
making it, without a server.
"""
from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, Optional, Sequence, Tuple

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_PACKAGE = HERE / "build" / "pipeline.yaml"

_FIELDS = (  # name, low, high, names
    ("second", 0, 59, None),
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]),
    ("day-of-week", 0, 6, ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]),
)
_ITEM = re.compile(r"^(\*|\?|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(\d+))?$")


def _value(token: str, field) -> int:
    name, low, high, names = field
    if names and token.upper() in names:
        return names.index(token.upper()) + low
    if not token.isdigit():
        raise ValueError(f"{name} field: {token!r} is not a number" + (f" or one of {names}" if names else ""))
    value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{name} field: {value} is outside {low}-{high}")
    return value


def validate_cron(expression: str) -> str:
    """Accepts a 6-field cron (second minute hour day-of-month month day-of-week).

    Raises ValueError saying which field is wrong and what a valid expression looks like.
    """
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(
            f"cron {expression!r} has {len(fields)} fields; Kubeflow needs 6, seconds first: "
            "'second minute hour day-of-month month day-of-week', e.g. '0 0 2 * * *' for 02:00 every day"
        )
    for text, field in zip(fields, _FIELDS):
        for item in text.split(","):
            m = _ITEM.match(item)
            if not m:
                raise ValueError(f"cron {expression!r}: {field[0]} field item {item!r} is not valid")
            base, step = m.group(1), m.group(2)
            if step is not None and int(step) == 0:
                raise ValueError(f"cron {expression!r}: {field[0]} field has a step of 0")
            if base == "?":
                if field[0] not in ("day-of-month", "day-of-week"):
                    raise ValueError(f"cron {expression!r}: '?' is allowed only in day-of-month or day-of-week")
                continue
            if base == "*":
                continue
            parts = base.split("-")
            values = [_value(p, field) for p in parts]
            if len(values) == 2 and values[0] > values[1]:
                raise ValueError(f"cron {expression!r}: {field[0]} range {base} runs backwards")
    return expression


class DryRunClient:
    """Stands in for kfp.Client under --dry-run: prints each call and returns placeholders."""

    def __init__(self, host: str, out: Callable[[str], None] = print):
        self._out = out
        self._out(f"kfp.Client(host={host!r})")

    def _call(self, method: str, **kwargs):
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        self._out(f"{method}({args})")

    def get_pipeline_id(self, name):
        self._call("get_pipeline_id", name=name)
        return None

    def upload_pipeline(self, pipeline_package_path, pipeline_name=None, description=None):
        self._call("upload_pipeline", pipeline_package_path=pipeline_package_path, pipeline_name=pipeline_name,
                   description=description)
        return SimpleNamespace(pipeline_id="<pipeline-id>")

    def upload_pipeline_version(self, pipeline_package_path, pipeline_version_name, pipeline_id=None):
        self._call("upload_pipeline_version", pipeline_package_path=pipeline_package_path,
                   pipeline_version_name=pipeline_version_name, pipeline_id=pipeline_id)
        return SimpleNamespace(pipeline_version_id="<version-id>")

    def list_pipeline_versions(self, pipeline_id, sort_by=""):
        self._call("list_pipeline_versions", pipeline_id=pipeline_id, sort_by=sort_by)
        return SimpleNamespace(pipeline_versions=[SimpleNamespace(pipeline_version_id="<version-id>")])

    def get_experiment(self, experiment_name=None):
        self._call("get_experiment", experiment_name=experiment_name)
        raise ValueError("dry run: experiments are not looked up")

    def create_experiment(self, name, description=None):
        self._call("create_experiment", name=name, description=description)
        return SimpleNamespace(experiment_id="<experiment-id>")

    def list_recurring_runs(self, experiment_id=None, page_size=100, filter=None):  # noqa: A002
        self._call("list_recurring_runs", experiment_id=experiment_id, page_size=page_size)
        return SimpleNamespace(recurring_runs=[])

    def delete_recurring_run(self, recurring_run_id):
        self._call("delete_recurring_run", recurring_run_id=recurring_run_id)

    def create_recurring_run(self, **kwargs):
        self._call("create_recurring_run", **kwargs)
        return SimpleNamespace(recurring_run_id="<recurring-run-id>")


def read_documents(package_path: str) -> Tuple[dict, Optional[dict]]:
    """A compiled file's PipelineSpec and its PlatformSpec (the second YAML document, as kfp
    writes it; None when there is none)."""
    with open(package_path) as f:
        docs = list(yaml.safe_load_all(f))
    return (docs[0] if docs else None), (docs[1] if len(docs) > 1 else None)


def read_package(package_path: str) -> dict:
    """The compiled PipelineSpec (YAML), checked to be one this project's compiler wrote."""
    if not package_path.endswith((".yaml", ".yml")):
        raise ValueError(f"{package_path}: the kfp client uploads a YAML PipelineSpec; compile with tfx_quantization.kubeflow.runner")
    if not os.path.exists(package_path):
        raise ValueError(f"{package_path} does not exist: run `make kubeflow` (tfx-quantization-kubeflow-compile) first")
    spec, _ = read_documents(package_path)
    if not isinstance(spec, dict) or "root" not in spec:
        raise ValueError(f"{package_path} is not a compiled PipelineSpec: compile with tfx_quantization.kubeflow.runner")
    return spec


def run_settings(spec: dict, pipeline_root: Optional[str], params: Dict[str, str]) -> Tuple[str, Dict[str, str]]:
    """The pipeline root (given, or the one compiled in) and the runtime parameter values,
    refusing names the pipeline does not declare."""
    root = pipeline_root or spec.get("defaultPipelineRoot", "")
    if not root:
        raise ValueError("no pipeline root: pass --pipeline-root (the spec carries none)")
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"unknown runtime parameter(s) {unknown}: the pipeline declares {sorted(declared)}")
    return root, dict(params)


def schedule(
    client,
    package_path: str | Path,
    pipeline_name: str,
    experiment_name: str,
    job_name: str,
    cron: str,
    version_name: Optional[str] = None,
    pipeline_root: Optional[str] = None,
    params: Optional[Dict[str, str]] = None,
) -> dict:
    """Uploads and schedules; the recurring run gets the pipeline root and parameter values."""
    validate_cron(cron)
    package_path = str(package_path)
    pipeline_root, params = run_settings(read_package(package_path), pipeline_root, params or {})
    version_name = version_name or f"{pipeline_name}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M%S}"

    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(
            pipeline_package_path=package_path, pipeline_name=pipeline_name,
            description="TFX quantization pipeline").pipeline_id
        versions = client.list_pipeline_versions(pipeline_id=pipeline_id, sort_by="created_at desc")
        version_id = versions.pipeline_versions[0].pipeline_version_id
    else:
        version_id = client.upload_pipeline_version(
            pipeline_package_path=package_path, pipeline_version_name=version_name,
            pipeline_id=pipeline_id).pipeline_version_id
    try:
        experiment_id = client.get_experiment(experiment_name=experiment_name).experiment_id
    except ValueError:
        experiment_id = client.create_experiment(name=experiment_name,
                                                 description="scheduled retraining").experiment_id
    existing = client.list_recurring_runs(experiment_id=experiment_id, page_size=100).recurring_runs or []
    for run in existing:
        if run.display_name == job_name:
            client.delete_recurring_run(recurring_run_id=run.recurring_run_id)
    run = client.create_recurring_run(
        experiment_id=experiment_id, job_name=job_name, description=f"{pipeline_name} on cron {cron}",
        cron_expression=cron, max_concurrency=1, no_catchup=True, pipeline_id=pipeline_id,
        version_id=version_id, enabled=True, pipeline_root=pipeline_root, params=params,
    )
    return {"pipeline_id": pipeline_id, "version_id": version_id, "experiment_id": experiment_id,
            "recurring_run_id": run.recurring_run_id}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("KF_PIPELINES_ENDPOINT", ""),
                        help="Kubeflow Pipelines API endpoint (env KF_PIPELINES_ENDPOINT)")
    parser.add_argument("--package", default=str(DEFAULT_PACKAGE))
    parser.add_argument("--pipeline-name", default="digits-quantization")
    parser.add_argument("--experiment", default="digits-quantization")
    parser.add_argument("--job-name", default="digits-quantization-scheduled")
    parser.add_argument("--cron", required=True, help="6 fields, seconds first, e.g. '0 0 2 * * *'")
    parser.add_argument("--version-name", default=None)
    parser.add_argument("--pipeline-root", default=None,
                        help="object-store pipeline root of the runs (default: the one compiled into the package)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="a runtime parameter value, e.g. gate_overrides='{\"max_accuracy_drop\": 0.005}'")
    parser.add_argument("--dry-run", action="store_true", help="print the calls instead of making them")
    args = parser.parse_args(argv)
    try:
        validate_cron(args.cron)
        if args.dry_run:
            client = DryRunClient(args.host or "<KF_PIPELINES_ENDPOINT>")
        else:
            if not args.host:
                raise ValueError("no Kubeflow host: pass --host or set KF_PIPELINES_ENDPOINT")
            import kfp

            client = kfp.Client(host=args.host)
        params = {}
        for item in args.param:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--param {item!r}: use NAME=VALUE")
            params[name] = value
        ids = schedule(client, args.package, args.pipeline_name, args.experiment, args.job_name, args.cron,
                       args.version_name, args.pipeline_root, params)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"scheduled: {ids}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
