"""Kubeflow v2: the compiled spec (no resolver, pipeline root, runtime parameters,
resources on every step, environment variables and secrets, retries, the KFP UI's outputs,
an uncached evaluator and pusher), the executors it names, cron validation, the dry-run
scheduler with the pipeline root and parameter values, and every task of the spec run in
DAG order through the spec's own container command, as KFP's launcher runs it, on s3://
artifact URIs of a real S3-compatible server, each step's environment built as a pod's is
(the container's env and the secrets the platform spec names): twice, the second time with
a stricter gate given as a runtime parameter, without recompiling."""
import copy
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb
from kfp.pipeline_spec import pipeline_spec_pb2

from kubeflow import runner, schedule
from tfx_quantization.pipeline.config import PipelineConfig
from tests.conftest import REPO_ROOT

IMAGE = "ghcr.io/qp-tests/tfx-quantization:test"
EXPECTED_DEPS = {
    "CsvExampleGen": set(),
    "QATTrainer": {"CsvExampleGen"},
    "RepresentativeDatasetGen": {"CsvExampleGen", "QATTrainer"},  # the label key of the model's contract
    "PostTrainingQuantizer": {"CsvExampleGen", "QATTrainer", "RepresentativeDatasetGen"},  # validation data
    "TFLiteEvaluator": {"CsvExampleGen", "QATTrainer", "PostTrainingQuantizer"},
    "QuantizedModelPusher": {"PostTrainingQuantizer", "TFLiteEvaluator"},
}
# The bundled digits job (its relative data_root names the folder in the image), smaller.
SMALL = {"QP_CONFIG": str(REPO_ROOT / "data" / "examples" / "digits.yaml"),
         "QP_EPOCHS": "3", "QP_QAT_EPOCHS": "1", "QP_LATENCY_RUNS": "5", "QP_CALIBRATION__NUM_SAMPLES": "100",
         # The subject is the spec and the launcher: two variants, not the bundled nine.
         "QP_VARIANTS": '["dynamic_range", "integer_only"]'}
# Object-store credentials as a platform team passes them: a Kubernetes secret's keys as the
# variables TensorFlow's and Beam's S3 clients read.
S3_SECRET = {"secret_name": "qp-s3-credentials",
             "key_to_env": {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY"}}
WIRED = dict(SMALL, QP_KUBEFLOW__SECRETS=json.dumps([S3_SECRET]),
             QP_KUBEFLOW__ENV=json.dumps({"AWS_REGION": "eu-west-1"}),
             QP_KUBEFLOW__STEP_RESOURCES=json.dumps({"QATTrainer": {"cpu_request": 3, "cpu_limit": 4,
                                                                    "memory_request": 6, "memory_limit": 8}}),
             QP_KUBEFLOW__MAX_RETRIES="3")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("kf")
    path = runner.compile_pipeline(IMAGE, "s3://qp-bucket/root", "s3://qp-bucket/serving", out, environ=WIRED)
    assert path.name == "pipeline.yaml"
    return schedule.read_documents(str(path))


@pytest.fixture(scope="module")
def spec(compiled):
    return compiled[0]


def test_compiled_yaml_parses_into_a_pipeline_spec_with_one_task_per_component(spec):
    proto = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    tasks = proto.root.dag.tasks
    assert set(tasks) == set(EXPECTED_DEPS)
    for name, deps in EXPECTED_DEPS.items():
        assert set(tasks[name].dependent_tasks) == deps, name
    deployment = json_format.ParseDict(spec["deploymentSpec"], pipeline_spec_pb2.PipelineDeploymentConfig(),
                                       ignore_unknown_fields=False)
    trainer = deployment.executors["QATTrainer_executor"].container
    assert trainer.resources.cpu_request == 3 and trainer.resources.memory_limit == 8  # kubeflow.step_resources
    assert deployment.executors["TFLiteEvaluator_executor"].container.resources.memory_request == 4
    assert not tasks["QuantizedModelPusher"].caching_options.enable_cache
    assert not tasks["TFLiteEvaluator"].caching_options.enable_cache
    assert tasks["QATTrainer"].caching_options.enable_cache


def test_no_executor_open_source_kfp_rejects_and_the_run_settings_are_in_the_spec(spec):
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert set(executor) == {"container"}, f"{name} is not a container executor (resolver/importer?)"
    assert not any("resolver" in t.lower() or "importer" in t.lower() for t in spec["root"]["dag"]["tasks"])
    assert spec["defaultPipelineRoot"] == "s3://qp-bucket/root"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"data_root", "input_config", "gate_overrides", "push_settings"}
    assert params["data_root"]["defaultValue"] == "/src/data/digits"
    assert params["gate_overrides"]["defaultValue"] == "{}"
    push = json.loads(params["push_settings"]["defaultValue"])
    assert push["destination"] == "s3://qp-bucket/serving" and push["model_name"] == "digits"
    assert '"pattern": "*"' in params["input_config"]["defaultValue"]
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["TFLiteEvaluator"]["inputs"]["parameters"]["overrides"] == {"componentInputParameter": "gate_overrides"}
    gen = tasks["CsvExampleGen"]["inputs"]["parameters"]
    assert gen["input_base"] == {"componentInputParameter": "data_root"}
    assert gen["input_config"] == {"componentInputParameter": "input_config"}
    assert tasks["QuantizedModelPusher"]["inputs"]["parameters"]["settings"] == {
        "componentInputParameter": "push_settings"}


@pytest.mark.fast
def test_every_task_declares_resources_env_secrets_and_a_retry_policy(compiled):
    spec, platform = compiled
    deployment = json_format.ParseDict(spec["deploymentSpec"], pipeline_spec_pb2.PipelineDeploymentConfig())
    proto = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    defaults = PipelineConfig.model_fields["kubeflow"].default_factory()
    for name, task in proto.root.dag.tasks.items():
        label = spec["components"][task.component_ref.name]["executorLabel"]
        container = deployment.executors[label].container
        expected = defaults.resources_of(name) if name != "QATTrainer" else None
        if expected:  # every step: its own or the default resources
            assert (container.resources.cpu_request, container.resources.cpu_limit,
                    container.resources.memory_request, container.resources.memory_limit) == (
                expected.cpu_request, expected.cpu_limit, expected.memory_request, expected.memory_limit), name
        assert container.resources.cpu_limit > 0 and container.resources.memory_limit > 0, name
        assert {e.name: e.value for e in container.env} == {"AWS_REGION": "eu-west-1"}, name
        retry = task.retry_policy
        assert retry.max_retry_count == 3 and retry.backoff_duration.seconds == defaults.retry_backoff_seconds, name
        assert retry.backoff_max_duration.seconds == defaults.retry_backoff_max_seconds, name
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][label]
        assert k8s == {"secretAsEnv": [{"secretName": "qp-s3-credentials", "keyToEnv": [
            {"secretKey": "access_key", "envVar": "AWS_ACCESS_KEY_ID"},
            {"secretKey": "secret_key", "envVar": "AWS_SECRET_ACCESS_KEY"}]}]}, name
    # The quantizer is not left on the small default: it converts every variant.
    assert deployment.executors["PostTrainingQuantizer_executor"].container.resources.memory_request > \
        defaults.resources.memory_request
    evaluator = spec["components"][spec["root"]["dag"]["tasks"]["TFLiteEvaluator"]["componentRef"]["name"]]
    ui = {k: v["artifactType"].get("schemaTitle") for k, v in evaluator["outputDefinitions"]["artifacts"].items()}
    assert ui["report_html"] == "system.HTML" and ui["gate_metrics"] == "system.Metrics"


# Per step, over the pipeline-wide settings of WIRED: the pusher writes the registry with keys
# of its own (they replace the pipeline-wide secret's variables) in another region; the
# trainer gets a service-account key file (a secret as a volume) and the variable naming it;
# the evaluator one more variable.
REGISTRY_SECRET = {"secret_name": "qp-registry-writer",
                   "key_to_env": {"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY"}}
PER_STEP = dict(WIRED, QP_KUBEFLOW__STEP_ENV=json.dumps({
    "QuantizedModelPusher": {"AWS_REGION": "us-east-1"}, "TFLiteEvaluator": {"OMP_NUM_THREADS": "2"},
    "QATTrainer": {"GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/google/key.json"}}),
    QP_KUBEFLOW__STEP_SECRETS=json.dumps({
        "QuantizedModelPusher": [REGISTRY_SECRET],
        "QATTrainer": [{"secret_name": "qp-gcp-key", "mount_path": "/var/secrets/google"}]}))


@pytest.mark.fast
def test_per_step_env_and_secrets_are_declared_on_their_step_only(tmp_path):
    path = runner.compile_pipeline(IMAGE, "s3://qp-bucket/root", "s3://qp-bucket/serving", tmp_path, environ=PER_STEP)
    spec, platform = schedule.read_documents(str(path))
    deployment = json_format.ParseDict(spec["deploymentSpec"], pipeline_spec_pb2.PipelineDeploymentConfig())
    json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    k8s_executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    wide = {"secretName": "qp-s3-credentials", "keyToEnv": [
        {"secretKey": "access_key", "envVar": "AWS_ACCESS_KEY_ID"},
        {"secretKey": "secret_key", "envVar": "AWS_SECRET_ACCESS_KEY"}]}
    expected = {  # step: (its container's env, its KubernetesExecutorConfig)
        "QuantizedModelPusher": ({"AWS_REGION": "us-east-1"},
                                 {"secretAsEnv": [dict(wide, secretName="qp-registry-writer")]}),
        "TFLiteEvaluator": ({"AWS_REGION": "eu-west-1", "OMP_NUM_THREADS": "2"}, {"secretAsEnv": [wide]}),
        "QATTrainer": ({"AWS_REGION": "eu-west-1", "GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/google/key.json"},
                       {"secretAsEnv": [wide], "secretAsVolume": [{"secretName": "qp-gcp-key",
                                                                   "mountPath": "/var/secrets/google"}]}),
    }
    for name, task in spec["root"]["dag"]["tasks"].items():
        label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        env, config = expected.get(name, ({"AWS_REGION": "eu-west-1"}, {"secretAsEnv": [wide]}))
        assert {e.name: e.value for e in deployment.executors[label].container.env} == env, name
        assert k8s_executors[label] == config, name
        json_format.ParseDict(k8s_executors[label], k8s_pb.KubernetesExecutorConfig())  # kfp-kubernetes' message


@pytest.mark.fast
@pytest.mark.parametrize("env, message", [
    ({"QP_KUBEFLOW__STEP_RESOURCES": '{"Trainer": {"cpu_request": 1, "cpu_limit": 1, "memory_request": 1, '
                                     '"memory_limit": 1}}'}, "names ['Trainer'], which are not steps"),
    ({"QP_KUBEFLOW__RESOURCES": '{"cpu_request": 4, "cpu_limit": 2, "memory_request": 1, "memory_limit": 1}'},
     "cpu_request 4.0 exceeds cpu_limit 2.0"),
    ({"QP_KUBEFLOW__ENV": '{"AWS_ACCESS_KEY_ID": "x"}', "QP_KUBEFLOW__SECRETS": json.dumps([S3_SECRET])},
     "would be set twice"),
    ({"QP_KUBEFLOW__STEP_ENV": '{"Pusher": {"A": "1"}}'}, "kubeflow.step_env (QP_KUBEFLOW__STEP_ENV) names ['Pusher'], "
                                                         "which are not steps"),
    ({"QP_KUBEFLOW__STEP_SECRETS": json.dumps({"Evaluator": [S3_SECRET]})},
     "kubeflow.step_secrets (QP_KUBEFLOW__STEP_SECRETS) names ['Evaluator'], which are not steps"),
    ({"QP_KUBEFLOW__STEP_ENV": '{"QuantizedModelPusher": {"AWS_ACCESS_KEY_ID": "x"}}',
      "QP_KUBEFLOW__STEP_SECRETS": json.dumps({"QuantizedModelPusher": [S3_SECRET]})},
     "kubeflow step QuantizedModelPusher: ['AWS_ACCESS_KEY_ID'] would be set twice"),
    ({"QP_KUBEFLOW__STEP_SECRETS": '{"QATTrainer": [{"secret_name": "a", "mount_path": "/s"}, '
                                   '{"secret_name": "b", "mount_path": "/s/"}]}'}, "['/s'] would be mounted twice"),
    ({"QP_KUBEFLOW__SECRETS": '[{"secret_name": "a"}]'}, "secret 'a' gives the step nothing"),
])
def test_bad_kubeflow_settings_are_refused_before_anything_is_written(tmp_path, env, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        runner.compile_pipeline(IMAGE, "s3://b/r", "s3://b/s", tmp_path, environ=dict(SMALL, **env))
    assert not (tmp_path / "pipeline.yaml").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(image="", pipeline_root="s3://b/r", push_destination="s3://b/s"), "--image is empty"),
    (dict(image="REGISTRY/tfx-quantization:TAG", pipeline_root="s3://b/r", push_destination="s3://b/s"),
     "--image='REGISTRY/tfx-quantization:TAG' is a placeholder"),
    (dict(image=IMAGE, pipeline_root="gs://YOUR_BUCKET/root", push_destination="s3://b/s"), "is a placeholder"),
    (dict(image=IMAGE, pipeline_root="/tmp/root", push_destination="s3://b/s"), "is not an object-store URI"),
    (dict(image=IMAGE, pipeline_root="s3://b/r", push_destination="/mnt/models"), "is not an object-store URI"),
])
def test_compile_refuses_placeholders_and_local_paths(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        runner.compile_pipeline(output_dir=tmp_path, **kwargs)
    assert not (tmp_path / "pipeline.yaml").exists()


def test_make_kubeflow_without_names_says_what_to_pass():
    # The recipe as a newcomer runs it, in this test's own venv; `-o <stamp>` keeps make from
    # reinstalling the package into it (a clone's files are newer than a shared venv's stamp).
    venv = sys.prefix
    result = subprocess.run(["make", "-s", "-C", str(REPO_ROOT), "-o", f"{venv}/.installed", "kubeflow",
                             f"VENV={venv}", "KF_IMAGE=", "KF_PIPELINE_ROOT=", "KF_PUSH_DESTINATION="],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "--image is empty: name the container image" in result.stderr
    # Every missing name at once, not one per try.
    assert "--pipeline-root is empty" in result.stderr and "--push-destination is empty" in result.stderr


def test_every_executor_uses_the_image_and_imports(spec):
    executors = spec["deploymentSpec"]["executors"]
    paths = []
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"] == IMAGE
        args = container["args"]
        paths.append(args[args.index("--executor_class_path") + 1])
    assert "tfx_quantization.tflite_evaluator.executor.Executor" in paths and len(paths) == 6
    code = "import importlib, sys\nfor p in sys.argv[1:]:\n    m, c = p.rsplit('.', 1)\n    getattr(importlib.import_module(m), c)\n"
    subprocess.run([sys.executable, "-c", code] + paths, cwd="/", check=True, capture_output=True)


def test_container_paths_and_settings_come_through(spec):
    def constant(task, name):
        return spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"][name]["runtimeValue"]["constant"]

    assert json.loads(constant("QATTrainer", "settings"))["epochs"] == 3
    assert json.loads(constant("TFLiteEvaluator", "settings"))["latency_runs"] == 5
    for executor in spec["deploymentSpec"]["executors"].values():
        assert executor["container"]["command"] == ["python", "-m", "tfx_quantization.kubeflow.entrypoint"]


@pytest.mark.parametrize("cron", ["0 0 2 * * *", "*/30 * * * * ?", "0 15 10 ? * MON-FRI", "0 0 0 1,15 JAN-JUN *",
                                  "5 4 3 2 1 0"])
def test_cron_accepts_valid_expressions(cron):
    assert schedule.validate_cron(cron) == cron


@pytest.mark.parametrize("cron, message", [
    ("0 2 * * *", "has 5 fields; Kubeflow needs 6"),
    ("60 0 2 * * *", "second field: 60 is outside 0-59"),
    ("0 0 24 * * *", "hour field: 24 is outside 0-23"),
    ("0 0 2 32 * *", "day-of-month field: 32 is outside 1-31"),
    ("0 0 2 * FOO *", "month field: 'FOO' is not a number"),
    ("0 0 2 * * 9", "day-of-week field: 9 is outside 0-6"),
    ("0 0 ? * * *", "'?' is allowed only in day-of-month or day-of-week"),
    ("*/0 * * * * *", "step of 0"),
    ("0 30-10 * * * *", "range 30-10 runs backwards"),
])
def test_cron_rejects_invalid_expressions(cron, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?").replace("*", r"\*")):
        schedule.validate_cron(cron)


@pytest.fixture
def package(tmp_path, spec):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_dry_run_prints_every_call_and_a_bad_cron_sends_nothing(package, capsys):
    assert schedule.main(["--dry-run", "--cron", "0 0 2 * * *", "--package", str(package),
                          "--param", 'gate_overrides={"max_accuracy_drop": 0.005}']) == 0
    out = capsys.readouterr().out
    for call in ("get_pipeline_id(", "upload_pipeline(", "create_experiment(", "list_recurring_runs(",
                 "create_recurring_run("):
        assert call in out
    assert "max_concurrency=1, no_catchup=True" in out and "cron_expression='0 0 2 * * *'" in out
    assert "pipeline_root='s3://qp-bucket/root'" in out
    assert """params={'gate_overrides': '{"max_accuracy_drop": 0.005}'}""" in out
    assert schedule.main(["--dry-run", "--cron", "0 2 * * *", "--package", str(package)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "has 5 fields" in captured.err


@pytest.mark.parametrize("args, message", [
    (["--param", "gate_overides={}"], "unknown runtime parameter(s) ['gate_overides']"),
    (["--param", "gate_overrides"], "use NAME=VALUE"),
])
def test_scheduler_refuses_bad_parameters_before_sending_anything(package, capsys, args, message):
    assert schedule.main(["--dry-run", "--cron", "0 0 2 * * *", "--package", str(package), *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "upload_pipeline" not in captured.out


def test_existing_pipeline_gets_a_new_version_and_the_run_is_replaced(package):
    from types import SimpleNamespace

    calls = []

    class Existing(schedule.DryRunClient):
        def get_pipeline_id(self, name):
            super().get_pipeline_id(name)
            return "p-1"

        def list_recurring_runs(self, **kw):
            super().list_recurring_runs(**kw)
            return SimpleNamespace(recurring_runs=[SimpleNamespace(display_name="nightly", recurring_run_id="r-0"),
                                                   SimpleNamespace(display_name="other", recurring_run_id="r-9")])

    ids = schedule.schedule(Existing("h", out=calls.append), package, "digits", "exp", "nightly", "0 0 2 * * *", "v2",
                            pipeline_root="s3://other/root")
    assert ids["pipeline_id"] == "p-1"
    assert any(c.startswith("upload_pipeline_version(") and "pipeline_version_name='v2'" in c for c in calls)
    assert "delete_recurring_run(recurring_run_id='r-0')" in calls
    assert not any("r-9" in c and c.startswith("delete") for c in calls)
    assert any("pipeline_root='s3://other/root'" in c for c in calls if c.startswith("create_recurring_run("))


# ---- the launcher ------------------------------------------------------------------------


def _order(spec):
    """The tasks in an order that respects dependentTasks."""
    tasks, done = spec["root"]["dag"]["tasks"], []
    while len(done) < len(tasks):
        done += sorted(t for t, d in tasks.items() if t not in done and set(d.get("dependentTasks", [])) <= set(done))
    return done


class Launcher:
    """Runs a compiled spec's tasks the way KFP v2's launcher does: an ExecutorInput built
    from the spec (artifact types and URIs, constants and the run's parameter values), the
    driver hook first when the spec has one, then the container's own command and args; the
    ExecutorOutput file gives the output artifacts' metadata to downstream tasks. A task with
    caching on whose inputs did not change since an earlier run is served from that run, as
    KFP's cache does. Each step's process gets the environment its pod would: the node's
    (`env`), the container's `env`, and the keys of the cluster's `secrets` ({name: {key:
    value}}) the platform spec's secretAsEnv names; a named secret or key the cluster lacks
    fails the step before it starts, as Kubernetes does (CreateContainerConfigError)."""

    def __init__(self, spec, env, workdir, platform=None, secrets=None):
        self.spec, self.env, self.workdir = spec, env, workdir
        self.k8s = (platform or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get(
            "executors", {})
        self.secrets = secrets or {}
        self.cache = {}
        self.executed = []

    def _parameters(self, task, values):
        out = {}
        for name, p in self.spec["root"]["dag"]["tasks"][task]["inputs"].get("parameters", {}).items():
            out[name] = p["runtimeValue"]["constant"] if "runtimeValue" in p else values[p["componentInputParameter"]]
        return out

    def run(self, run_id, params=None):
        declared = self.spec["root"]["inputDefinitions"]["parameters"]
        values = {k: v["defaultValue"] for k, v in declared.items()}
        values.update(params or {})
        root = self.spec["defaultPipelineRoot"]
        produced, self.executed = {}, []
        for task in _order(self.spec):
            t = self.spec["root"]["dag"]["tasks"][task]
            component = self.spec["components"][t["componentRef"]["name"]]
            in_defs = component.get("inputDefinitions", {}).get("artifacts", {})
            out_defs = component.get("outputDefinitions", {}).get("artifacts", {})
            inputs = {k: produced[(a["taskOutputArtifact"]["producerTask"], a["taskOutputArtifact"]["outputArtifactKey"])]
                      for k, a in t["inputs"].get("artifacts", {}).items()}
            parameters = self._parameters(task, values)
            key = (task, json.dumps(parameters, sort_keys=True), json.dumps(inputs, sort_keys=True))
            if t.get("cachingOptions", {}).get("enableCache") and key in self.cache:
                produced.update({(task, k): v for k, v in self.cache[key].items()})
                continue
            outputs = {k: {"uri": f"{root}/{run_id}/{task}/{k}"} for k in out_defs}
            output_file = self.workdir / run_id / task / "executor_output.json"
            executor_input = {
                "inputs": {"artifacts": self._artifacts(task, in_defs, inputs), "parameterValues": parameters},
                "outputs": {"artifacts": self._artifacts(task, out_defs, outputs), "outputFile": str(output_file)},
            }
            container = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
            env = self.pod_env(component["executorLabel"], container)
            hook = container.get("lifecycle", {}).get("preCacheCheck")
            if hook:  # ExampleGen's driver: resolves the input (span) into the output file
                self._exec(hook["command"], hook["args"], executor_input, env)
            self._exec(container["command"], container["args"], executor_input, env)
            self.executed.append(task)
            with open(output_file) as f:
                result = json.load(f)
            mine = {}
            for k, a in outputs.items():
                meta = result.get("artifacts", {}).get(k, {}).get("artifacts", [{}])[0].get("metadata", {})
                mine[k] = {"uri": a["uri"], "metadata": meta}
            produced.update({(task, k): v for k, v in mine.items()})
            self.cache[key] = mine
        return produced

    def _artifacts(self, task, defs, given):
        return {key: {"artifacts": [{
            "name": f"projects/test/locations/local/metadataStores/default/artifacts/{task}-{key}",
            "uri": a["uri"], "metadata": a.get("metadata", {}),
            "type": copy.deepcopy(defs[key]["artifactType"])}]} for key, a in given.items()}

    def pod_env(self, label, container):
        env = dict(self.env, **{e["name"]: e["value"] for e in container.get("env", [])})
        for secret in self.k8s.get(label, {}).get("secretAsEnv", []):
            data = self.secrets.get(secret["secretName"])
            assert data is not None, f"{label}: secret {secret['secretName']!r} not found"
            for pair in secret["keyToEnv"]:
                assert pair["secretKey"] in data, f"{label}: key {pair['secretKey']!r} not in {secret['secretName']}"
                env[pair["envVar"]] = data[pair["secretKey"]]
        return env

    def _exec(self, command, args, executor_input, env):
        os.makedirs(os.path.dirname(executor_input["outputs"]["outputFile"]), exist_ok=True)
        args = [json.dumps(executor_input) if a == "{{$}}" else a for a in args]
        result = subprocess.run(command + args, cwd=self.workdir, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, (command, result.stderr[-4000:])


def test_every_task_runs_under_the_kubeflow_launcher_on_s3_and_a_runtime_parameter_tightens_the_gate(
        s3_server, tmp_path):
    bucket = s3_server.bucket("kfp-run")
    # The credentials reach the steps only through the spec: the S3 endpoint as the
    # containers' env, the keys from a Kubernetes secret (not in Beam's arguments, nor in
    # the launching process's environment).
    credentials = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    beam_args = [a for a in s3_server.beam_args if not a.startswith(("--s3_access_key_id", "--s3_secret_access_key"))]
    environ = dict(WIRED, QP_DATA_ROOT=str(REPO_ROOT / "data" / "digits"),
                   QP_KUBEFLOW__ENV=json.dumps({k: v for k, v in s3_server.env.items() if k not in credentials}),
                   QP_BEAM_PIPELINE_ARGS=json.dumps(["--direct_num_workers=1", *beam_args]))
    path = runner.compile_pipeline(IMAGE, f"{bucket}/root", f"{bucket}/serving", tmp_path / "build", environ=environ)
    spec, platform = schedule.read_documents(str(path))
    # `python` in the command is the image's interpreter; here, this environment's. The
    # entry point must not depend on the caller's TF_USE_LEGACY_KERAS or QP_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("QP_") and k not in s3_server.env
           and not k.startswith("AWS_")}
    env.update(PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    env.pop("TF_USE_LEGACY_KERAS", None)
    cluster_secrets = {S3_SECRET["secret_name"]: {"access_key": s3_server.env["AWS_ACCESS_KEY_ID"],
                                                  "secret_key": s3_server.env["AWS_SECRET_ACCESS_KEY"]}}
    launcher = Launcher(spec, env, tmp_path, platform, cluster_secrets)

    first = launcher.run("run-1")
    assert launcher.executed == _order(spec)  # every task, in DAG order
    # The KFP UI's outputs: the report as system.HTML at its own URI, the gate's figures as
    # system.Metrics metadata.
    html = first[("TFLiteEvaluator", "report_html")]
    assert s3_server.read("kfp-run", html["uri"].split("kfp-run/", 1)[1]).lstrip().lower().startswith(b"<!doctype html")
    figures = first[("TFLiteEvaluator", "gate_metrics")]["metadata"]
    assert figures["blessed"] == 1 and figures["selected_size_bytes"] > 0
    assert figures["selected_accuracy"] == first[("TFLiteEvaluator", "evaluation")]["metadata"]["selected_accuracy"]
    keys = s3_server.keys("kfp-run")
    assert "serving/digits/1/model.tflite" in keys and "serving/digits/1/manifest.json" in keys
    assert s3_server.read("kfp-run", "serving/digits/LATEST") == b"1\n"
    assert first[("TFLiteEvaluator", "blessing")]["metadata"]["blessed"] == 1
    assert first[("QuantizedModelPusher", "pushed_model")]["metadata"]["pushed_version"] == "1"
    assert any(k.startswith("root/run-1/QATTrainer/model/") and k.endswith("saved_model.pb") for k in keys)

    # The same compiled spec, a stricter gate as a runtime parameter: nothing is pushed.
    second = launcher.run("run-2", {"gate_overrides": json.dumps({"max_model_bytes": 1})})
    assert launcher.executed == ["TFLiteEvaluator", "QuantizedModelPusher"]  # the rest from the cache
    metrics = json.loads(s3_server.read("kfp-run", "root/run-2/TFLiteEvaluator/evaluation/metrics.json"))
    assert metrics["settings"]["max_model_bytes"] == 1 and not metrics["blessed"]
    assert metrics["baseline"]["version"] == "1"  # the deployed model, read from the registry
    assert second[("QuantizedModelPusher", "pushed_model")]["metadata"]["pushed"] == 0
    assert s3_server.read("kfp-run", "serving/digits/LATEST") == b"1\n"
    assert not any(k.startswith("serving/digits/2/") for k in s3_server.keys("kfp-run"))
