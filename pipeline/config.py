"""The pipeline's configuration: where things are, plus one settings model per stage.

`PipelineConfig` composes the stages' settings (components/settings.py) and the model
contract (components/model_contract.py), and restates none of their fields. Values come,
later ones winning, from:
  1. the defaults: generic; `pipeline_name` and `data_root` have none;
  2. a YAML or JSON file named by QP_CONFIG, holding the same tree, e.g. the bundled digits
     job, data/examples/digits.yaml (`make run` uses it unless QP_CONFIG names another):
         pipeline_name: digits-quantization
         data_root: data/digits          # relative paths: against the current directory
         contract: {inputs: {image: {features: [pixel_00, ...], shape: [8, 8, 1]}}, num_classes: 10}
         gate: {max_accuracy_drop: 0.02, selection: fastest}
  3. QP_* environment variables:
       QP_<FIELD>             a pipeline-level field (QP_PIPELINE_NAME, QP_OUTPUT_ROOT, ...)
       QP_<STAGE>__<FIELD>    one stage's field (QP_GATE__MAX_ACCURACY_DROP, QP_TRAIN__EPOCHS)
       QP_<FIELD>             shorthand for a stage field: sets it in every stage that has a
                              field of that name (QP_MAX_ACCURACY_DROP, QP_LABEL_KEY, QP_SEED)
     Lists, dicts, numbers, booleans and null are read as JSON; text fields take the raw text.
     An unknown QP_ name is an error, so a typo never silently falls back to a default;
     so is an unknown key in the file (at any depth), named with the file and its close
     matches (`gate.max_acuracy_drop ... did you mean gate.max_accuracy_drop?`).
  4. explicit keyword overrides (tests, the Kubeflow compiler).
Every value is validated when the configuration is built, before any stage runs.

    python -m tfx_quantization.pipeline.config              the effective configuration
    python -m tfx_quantization.pipeline.config gate.metric  one value as JSON (pipeline_name, gate.targets, contract, ...)
    python -m tfx_quantization.pipeline.config --help       every setting, its variable, default and meaning
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import typing
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tfx_quantization import fsutil
from tfx_quantization.contracts import VERBOSE_VAR
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.settings import (
    DEFAULT_MAX_ACCURACY_DROP, CalibrationSettings, GateSettings, PushSettings, QuantizeSettings, SettingsError,
    TrainSettings, describe_errors,
)
from tfx_quantization.settings_base import StageSettings, models_in

ENV_PREFIX = "QP_"
CONFIG_FILE_VAR = "QP_CONFIG"
BUNDLED_CONFIG = "data/examples/digits.yaml"  # the repository's digits job (the Makefile's default QP_CONFIG)
REQUIRED = ("pipeline_name", "data_root")  # no default: a job names them
# QP_ variables that are not settings: the Makefile's interpreter, the config file, logging.
NON_SETTING_VARS = {"QP_PYTHON", CONFIG_FILE_VAR, VERBOSE_VAR}
NESTED = "__"

__all__ = ["PipelineConfig", "SettingsError"]


ENV_VAR_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"  # a Kubernetes object name (DNS-1123 subdomain)


class StepResources(StageSettings):
    """CPU (cores) and memory (GB) of one step's container: the request is what the scheduler
    reserves, the limit what the container may use."""

    cpu_request: float = Field(gt=0)
    cpu_limit: float = Field(gt=0)
    memory_request: float = Field(gt=0, description="GB")
    memory_limit: float = Field(gt=0, description="GB")

    @model_validator(mode="after")
    def _request_within_limit(self) -> "StepResources":
        for what in ("cpu", "memory"):
            if getattr(self, f"{what}_request") > getattr(self, f"{what}_limit"):
                raise ValueError(f"{what}_request {getattr(self, f'{what}_request')} exceeds {what}_limit "
                                 f"{getattr(self, f'{what}_limit')}: raise the limit or lower the request")
        return self


class SecretEnv(StageSettings):
    """A Kubernetes secret given to a step: its keys as environment variables (`key_to_env`,
    kfp-kubernetes' use_secret_as_env), its keys as files in a folder (`mount_path`,
    use_secret_as_volume: one file per key, e.g. a service-account key file), or both."""

    secret_name: str = Field(pattern=K8S_NAME, description="the secret in the run's namespace")
    key_to_env: Dict[str, str] = Field(default_factory=dict, description="{secret key: environment variable}, e.g. "
                                                                         "{\"access_key\": \"AWS_ACCESS_KEY_ID\"}")
    mount_path: Optional[str] = Field(None, pattern=r"^/", description="an absolute folder in the container where "
                                                                       "the secret's keys appear as files")

    @model_validator(mode="after")
    def _env_names(self) -> "SecretEnv":
        import re

        if not self.key_to_env and not self.mount_path:
            raise ValueError(f"secret {self.secret_name!r} gives the step nothing: set key_to_env (keys as environment "
                             "variables) or mount_path (keys as files), or both")
        bad = [v for v in self.key_to_env.values() if not re.match(ENV_VAR_NAME, v)]
        if bad:
            raise ValueError(f"{bad} are not environment variable names (letters, digits, '_', not first a digit)")
        return self


def _set_once(env: Dict[str, str], secrets: List[SecretEnv], where: str) -> None:
    """Refuses a variable set twice (in env and a secret, or two secrets) or a folder two
    secrets mount, among the settings of one level (`where`: the pipeline or a step)."""
    import re

    bad = [v for v in env if not re.match(ENV_VAR_NAME, v)]
    if bad:
        raise ValueError(f"{where}env names {bad}, which are not environment variable names")
    from_secrets = [v for s in secrets for v in s.key_to_env.values()]
    twice = sorted({v for v in from_secrets if from_secrets.count(v) > 1} | (set(env) & set(from_secrets)))
    if twice:
        raise ValueError(f"{where}{twice} would be set twice (env and secrets, or two secrets): set each variable once")
    mounts = [s.mount_path.rstrip("/") for s in secrets if s.mount_path]
    twice = sorted({m for m in mounts if mounts.count(m) > 1})
    if twice:
        raise ValueError(f"{where}{twice} would be mounted twice (two secrets): give each secret its own mount_path")


# Requests = limits: the scheduler reserves what these steps use. The trainer trains, the
# quantizer converts every variant and runs the selective search, the evaluator runs every
# variant over the eval split.
HEAVY_STEP_RESOURCES = {
    "QATTrainer": StepResources(cpu_request=2, cpu_limit=2, memory_request=8, memory_limit=8),
    "PostTrainingQuantizer": StepResources(cpu_request=2, cpu_limit=2, memory_request=4, memory_limit=4),
    "TFLiteEvaluator": StepResources(cpu_request=2, cpu_limit=2, memory_request=4, memory_limit=4),
}


STEP_FIELDS = ("step_env", "step_secrets", "step_resources")  # KubeflowSettings' settings keyed by step


class KubeflowSettings(StageSettings):
    """Kubeflow: the compiled spec's pods (environment, secrets, resources, retries)."""

    env: Dict[str, str] = Field(default_factory=dict, description="environment variables of every step, e.g. "
                                                                 "{\"S3_ENDPOINT\": \"http://minio:9000\"}")
    secrets: List[SecretEnv] = Field(default_factory=list, description="Kubernetes secrets exposed to every step "
                                                                       "as environment variables (object-store "
                                                                       "credentials)")
    resources: StepResources = Field(
        default_factory=lambda: StepResources(cpu_request=1, cpu_limit=1, memory_request=2, memory_limit=2),
        description="every step's CPU and memory unless step_resources names the step")
    step_env: Dict[str, Dict[str, str]] = Field(
        default_factory=dict, description="environment variables by step (component id), over `env`: a step's "
                                          "value wins for a name in both")
    step_secrets: Dict[str, List[SecretEnv]] = Field(
        default_factory=dict, description="Kubernetes secrets by step (component id), beside `secrets`: a step's "
                                          "secret wins for a variable or mount_path the pipeline-wide ones also set")
    step_resources: Dict[str, StepResources] = Field(
        default_factory=dict, description="CPU and memory by step (component id), over the heavy steps' defaults "
                                          "(QATTrainer 2 CPU/8 GB, PostTrainingQuantizer and TFLiteEvaluator "
                                          "2 CPU/4 GB) and `resources`")
    max_retries: int = Field(2, ge=0, description="retries of a failed step (KFP retryPolicy); 0: none")
    retry_backoff_seconds: int = Field(60, ge=0, description="wait before the first retry")
    retry_backoff_factor: float = Field(2.0, ge=1, description="each later wait is this many times the one before")
    retry_backoff_max_seconds: int = Field(600, ge=0, description="the longest wait between retries")

    @model_validator(mode="after")
    def _env_once(self) -> "KubeflowSettings":
        _set_once(self.env, self.secrets, "")
        for step in sorted(set(self.step_env) | set(self.step_secrets)):
            _set_once(self.step_env.get(step, {}), self.step_secrets.get(step, []), f"kubeflow step {step}: ")
        return self

    def env_of(self, step: str) -> Dict[str, str]:
        """The step's plain environment variables: `env`, then `step_env`, minus those a
        step's own secret sets."""
        own = {v for s in self.step_secrets.get(step, []) for v in s.key_to_env.values()}
        return {k: v for k, v in {**self.env, **self.step_env.get(step, {})}.items() if k not in own}

    def secrets_of(self, step: str) -> List[SecretEnv]:
        """The step's secrets: `secrets` (less the variables and mount paths the step sets
        itself, in step_env or step_secrets), then `step_secrets`."""
        own = self.step_secrets.get(step, [])
        taken_vars = set(self.step_env.get(step, {})) | {v for s in own for v in s.key_to_env.values()}
        taken_mounts = {s.mount_path.rstrip("/") for s in own if s.mount_path}
        kept = []
        for s in self.secrets:
            keys = {k: v for k, v in s.key_to_env.items() if v not in taken_vars}
            mount = s.mount_path if s.mount_path and s.mount_path.rstrip("/") not in taken_mounts else None
            if keys or mount:
                kept.append(s.model_copy(update={"key_to_env": keys, "mount_path": mount}))
        return kept + list(own)

    def resources_of(self, step: str) -> StepResources:
        return self.step_resources.get(step) or HEAVY_STEP_RESOURCES.get(step) or self.resources


class PipelineConfig(BaseModel):
    """Where things are, and the settings of each stage."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    pipeline_name: str = Field(min_length=1, description="the TFX pipeline's name; the registry's model name "
                                                         "unless push.model_name is set")
    data_root: str = Field(min_length=1, description="folder ExampleGen reads; a relative path is taken from "
                                                     "the current directory")
    data_format: Literal["csv", "tfrecord"] = Field(
        "csv", description="csv (CSV files with a header) or tfrecord (tf.Example records)")
    input_pattern: str = Field("*", min_length=1,
                               description="file pattern under data_root; 'span-{SPAN}/*' picks the newest span")
    output_root: str = Field(default_factory=lambda: os.path.abspath("local_outputs"), min_length=1,
                             description="default home of pipeline_root, metadata and the registry; default: "
                                         "local_outputs under the current directory")
    pipeline_root: str = Field("", description="'': <output_root>/pipeline_root")
    metadata_path: str = Field("", description="sqlite ML Metadata; '': <output_root>/metadata.sqlite")
    # One in-process worker: on 2 cores two multi-processing workers were slower at every
    # size measured (BENCHMARKS.md, section 3).
    beam_pipeline_args: List[str] = Field(default_factory=lambda: ["--direct_num_workers=1"],
                                          description="Beam pipeline options (a JSON list)")
    enable_cache: bool = Field(True, description="reuse the outputs of unchanged stages")
    fail_if_nothing_pushed: bool = Field(
        False, description="python -m tfx_quantization.pipeline.outcome (the end of make run) exits 3 when the run left no blessed "
                           "model deployed; off: an unblessed model is a successful run, as in TFX")

    tfx_module_file: str = Field(
        "", description="a TFX module with preprocessing_fn and run_fn: TFX's stock StatisticsGen, SchemaGen, "
                        "Transform and Trainer run it, QATFineTuner fine-tunes its model, and `contract` says how "
                        "the model meets the transformed examples; '': the built-in QATTrainer, which builds its "
                        "model from `contract`")
    tfx_train_steps: int = Field(400, ge=1, description="the stock Trainer's TrainArgs.num_steps")
    tfx_eval_steps: int = Field(10, ge=1, description="the stock Trainer's EvalArgs.num_steps")

    train: TrainSettings = Field(default_factory=TrainSettings)
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    quantize: QuantizeSettings = Field(default_factory=QuantizeSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    push: PushSettings = Field(default_factory=PushSettings)
    contract: ModelContract = Field(default_factory=ModelContract)
    kubeflow: KubeflowSettings = Field(default_factory=KubeflowSettings)

    @model_validator(mode="before")
    @classmethod
    def _required(cls, tree: Any) -> Any:
        missing = [n for n in REQUIRED if isinstance(tree, dict) and not tree.get(n)]
        if missing:
            names = " and ".join(setting_name([n]) for n in missing)
            raise ValueError(f"{names} {'is' if len(missing) == 1 else 'are'} not set: name a configuration file "
                             f"with {CONFIG_FILE_VAR} (the bundled digits job: {CONFIG_FILE_VAR}={BUNDLED_CONFIG}, "
                             f"what make run uses) or set {'it' if len(missing) == 1 else 'them'}")
        return tree

    @model_validator(mode="after")
    def _derive_and_check(self) -> "PipelineConfig":
        """Fills what defaults to another setting, then checks rules across stages."""
        # Relative local paths are taken from the current directory (the repository for make).
        for name in ("data_root", "output_root"):
            if not fsutil.is_remote(getattr(self, name)):
                setattr(self, name, os.path.abspath(getattr(self, name)))
        if not self.pipeline_root:
            self.pipeline_root = fsutil.join(self.output_root, "pipeline_root")
        if self.tfx_module_file and not fsutil.is_remote(self.tfx_module_file):
            self.tfx_module_file = os.path.abspath(self.tfx_module_file)  # TFX packages it from there
        if self.train.module_file and not fsutil.is_remote(self.train.module_file):
            self.train.module_file = os.path.abspath(self.train.module_file)
        if not self.metadata_path:
            self.metadata_path = fsutil.join(self.output_root, "metadata.sqlite")
        if not self.push.destination:
            self.push.destination = fsutil.join(self.output_root, "serving")
        if not self.push.model_name:
            self.push.model_name = self.pipeline_name
        if not self.calibration.label_key and self.contract.has_labels:  # the contract is the one home of the label
            self.calibration.label_key = self.contract.label_key
        if self.calibration.seed is None:
            self.calibration.seed = self.train.seed
        if self.quantize.search_max_drop is None:
            bound = self.gate.max_accuracy_drop
            self.quantize.search_max_drop = DEFAULT_MAX_ACCURACY_DROP if bound is None else bound
        if not self.tfx_module_file:  # the built-in trainer builds its model from the contract
            try:
                ModelSpec.of_contract(self.contract)
            except ValueError as e:
                raise ValueError(f"{e} (QP_CONTRACT__INPUTS, QP_CONTRACT__NUM_CLASSES)") from None
        from tfx_quantization.quantization.metrics import gate_metric_of
        gate_metric_of(self.contract.task, self.gate)  # the gate's metric is one of the task's (or floors, without labels)
        if self.quantize.validation_split == self.gate.eval_split:
            raise ValueError(
                f"quantize.validation_split and gate.eval_split are both {self.gate.eval_split!r}: the selective search "
                "would choose on the gate's data; give the search another split")
        if isinstance(self.gate.selection, list) and self.quantize.variants:
            never = [n for n in self.gate.selection if n not in self.quantize.variants]
            if never:
                raise ValueError(
                    f"gate.selection names {never}, which quantize.variants {self.quantize.variants} never builds: "
                    "add them to quantize.variants or drop them from gate.selection")
        return self

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> "PipelineConfig":
        """Defaults, then the QP_CONFIG file, then QP_* variables, then keyword overrides
        (a section may be given as a dict of its fields or as a settings object)."""
        environ = os.environ if environ is None else environ
        tree: Dict[str, Any] = {}
        path = environ.get(CONFIG_FILE_VAR, "")
        if path:
            tree = read_config_file(path)
        for var, raw in sorted(environ.items()):
            if not var.startswith(ENV_PREFIX) or var in NON_SETTING_VARS:
                continue
            for loc in env_targets(var):
                _set(tree, loc, parse_env_value(var, raw, _annotation(loc)))
        for key, value in overrides.items():
            if isinstance(value, BaseModel):
                value = value.model_dump()
            if isinstance(value, dict) and isinstance(tree.get(key), dict):
                value = {**tree[key], **value}
            tree[key] = value
        return cls.build(tree)

    @classmethod
    def build(cls, tree: Dict[str, Any]) -> "PipelineConfig":
        try:
            return cls.model_validate(tree)
        except ValidationError as e:
            raise SettingsError(f"bad configuration: {describe_errors(e, setting_name, model=cls)}") from None

    def uses_s3(self) -> bool:
        """True when a path of the run is on S3 (TensorFlow then needs tensorflow-io)."""
        paths = [self.data_root, self.pipeline_root, self.push.destination, self.train.module_file]
        return any(p.startswith("s3://") for p in paths)

    def to_dict(self) -> Dict[str, Any]:
        return self.model_dump()

    def get(self, dotted: str) -> Any:
        """A value by its dotted path (`gate.metric`) or by its flat name (`pipeline_name`)."""
        locs = [tuple(dotted.split("."))] if "." in dotted else [(dotted,)] if dotted in PipelineConfig.model_fields else \
            _flat_targets(dotted)
        if not locs:
            raise SettingsError(f"{dotted!r} is not a setting: see python -m tfx_quantization.pipeline.config --help")
        value: Any = self
        for part in locs[0]:
            if not isinstance(value, BaseModel) or part not in type(value).model_fields:
                raise SettingsError(f"{dotted!r} is not a setting: see python -m tfx_quantization.pipeline.config --help")
            value = getattr(value, part)
        return value


# ---- the names of settings ---------------------------------------------------------------
def _sections() -> Dict[str, type]:
    return {name: f.annotation for name, f in PipelineConfig.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}


def _top_fields() -> List[str]:
    return [n for n in PipelineConfig.model_fields if n not in _sections()]


def _flat_targets(field: str) -> List[Tuple[str, ...]]:
    return [(s, field) for s, model in _sections().items() if field in model.model_fields]


def env_name(loc: Tuple[str, ...]) -> str:
    return ENV_PREFIX + NESTED.join(p.upper() for p in loc)


def setting_name(loc: List[str]) -> str:
    """`gate.max_accuracy_drop (QP_GATE__MAX_ACCURACY_DROP)` for an error message; inside a
    setting's value (`contract.inputs.image.shape`), the variable of that setting."""
    return f"{'.'.join(loc)} ({env_name(tuple(loc[:2]))})"


def all_env_names() -> List[str]:
    names = [env_name((f,)) for f in _top_fields()]
    for section, model in _sections().items():
        names += [env_name((section, f)) for f in model.model_fields]
    return names


def env_targets(var: str) -> List[Tuple[str, ...]]:
    """The settings a QP_ variable sets; a SettingsError naming close matches when none."""
    name = var[len(ENV_PREFIX):].lower()
    sections = _sections()
    if NESTED in name:
        section, _, field = name.partition(NESTED)
        if section in sections and field in sections[section].model_fields:
            return [(section, field)]
    elif name in _top_fields():
        return [(name,)]
    elif _flat_targets(name):
        return _flat_targets(name)
    close = difflib.get_close_matches(var, all_env_names() + [env_name((f,)) for s in sections.values()
                                                               for f in s.model_fields], n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise SettingsError(f"{var} is not a pipeline setting.{hint} Every setting: python -m tfx_quantization.pipeline.config --help")


def _annotation(loc: Tuple[str, ...]):
    model: type = PipelineConfig
    for part in loc[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[loc[-1]].annotation


def _is_text(annotation) -> bool:
    if annotation is str:
        return True
    return typing.get_origin(annotation) is Literal and all(isinstance(a, str) for a in typing.get_args(annotation))


def parse_env_value(var: str, raw: str, annotation) -> Any:
    """Text fields take the raw text; anything else is read as JSON (numbers, true/false,
    null, lists, dicts), falling back to the text for pydantic to judge."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) is typing.Union and type(None) in args
    if optional and raw.strip().lower() in ("", "none", "null"):
        return None
    if _is_text(annotation):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _set(tree: Dict[str, Any], loc: Tuple[str, ...], value: Any) -> None:
    for part in loc[:-1]:
        tree = tree.setdefault(part, {})
    tree[loc[-1]] = value


def read_config_file(path: str) -> Dict[str, Any]:
    """A YAML or JSON configuration file holding (part of) the PipelineConfig tree."""
    if not fsutil.exists(path):
        where = "" if os.path.isabs(path) or "://" in path else f" (looked for {os.path.abspath(path)}: a relative path " \
            "is taken from the current folder, which `make -C <repo>` sets to the repository; pass an absolute path)"
        raise SettingsError(f"{CONFIG_FILE_VAR}={path}: the file does not exist{where}")
    try:
        tree = yaml.safe_load(fsutil.read_text(path))
    except yaml.YAMLError as e:
        raise SettingsError(f"{CONFIG_FILE_VAR}={path} is not valid YAML or JSON: {e}") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise SettingsError(f"{CONFIG_FILE_VAR}={path} must hold a mapping of settings, not {type(tree).__name__}")
    unknown = unknown_keys(PipelineConfig, tree)
    if unknown:
        where, close = unknown[0]
        hint = f": did you mean {', '.join(close)}?" if close else "."
        more = f" Also unknown: {', '.join(w for w, _ in unknown[1:4])}." if len(unknown) > 1 else ""
        raise SettingsError(f"{CONFIG_FILE_VAR}={path}: {where} is not a setting{hint}{more} Fix the file; every "
                            "setting: python -m tfx_quantization.pipeline.config --help")
    return tree


def unknown_keys(model: type, tree: Any, prefix: str = "") -> List[Tuple[str, List[str]]]:
    """Each key of a configuration tree that names no setting, as (its dotted path, the
    close matches among the settings beside it), through nested models, lists and dicts of
    them: `gate.max_acuracy_drop` -> ['gate.max_accuracy_drop']."""
    if not isinstance(tree, dict):
        return []
    out: List[Tuple[str, List[str]]] = []
    fields = model.model_fields
    for key, value in tree.items():
        where = f"{prefix}{key}"
        if key not in fields:
            names = list(fields) if prefix else list(fields) + [f"{s}.{f}" for s, m in _sections().items()
                                                                 for f in m.model_fields]
            out.append((where, [prefix + m for m in difflib.get_close_matches(str(key), names, n=3)]))
            continue
        annotation = fields[key].annotation
        inner = models_in(annotation)
        if not inner:
            continue
        sub = inner[0]
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        container = typing.get_origin(args[0]) if origin is typing.Union and len(args) == 1 else origin
        if container in (list, List) and isinstance(value, list):
            for i, item in enumerate(value):
                out += unknown_keys(sub, item, f"{where}[{i}].")
        elif container in (dict, Dict) and isinstance(value, dict):
            for name, item in value.items():
                out += unknown_keys(sub, item, f"{where}.{name}.")
        elif isinstance(value, dict):
            out += unknown_keys(sub, value, f"{where}.")
    return out


# ---- the command line --------------------------------------------------------------------
def settings_help() -> str:
    """Every setting: its variable(s), default and meaning, grouped by stage."""
    lines = ["pipeline:"]
    for name in _top_fields():
        f = PipelineConfig.model_fields[name]
        default = "(required)" if f.is_required() else _short(f.get_default(call_default_factory=True))
        lines.append(f"  {env_name((name,)):<34} {default}  {f.description or ''}")
    counts: Dict[str, int] = {}
    for model in _sections().values():
        for f in model.model_fields:
            counts[f] = counts.get(f, 0) + 1
    for section, model in _sections().items():
        lines.append(f"{section} ({model.__name__}: {(model.__doc__ or '').strip().splitlines()[0]}):")
        for name, f in model.model_fields.items():
            alias = f" or {env_name((name,))}" if name not in _top_fields() else ""
            shared = " [shorthand sets every stage's]" if alias and counts[name] > 1 else ""
            lines.append(f"  {env_name((section, name)) + alias:<34} "
                         f"{_short(f.get_default(call_default_factory=True))}  {f.description or ''}{shared}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = json.dumps(_plain(value))  # a default may be a settings model (kubeflow.resources)
    return text if len(text) <= 40 else text[:37] + "..."


def compact_json(obj: Any) -> str:
    """JSON with every list of scalars on one line (64 pixel names are one line, not 64)."""
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        inner = ",\n".join(f"{json.dumps(k)}: {compact_json(v)}" for k, v in obj.items())
        return "{\n" + "\n".join("  " + line for line in inner.splitlines()) + "\n}"
    return json.dumps(obj)


def _plain(value: Any) -> Any:
    """A setting's value as JSON-ready data: settings models (a deployment target, a
    contract's input), and lists and dicts of them, as their fields."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tfx-quantization-config", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the effective configuration, or one value of it.",
        epilog=(__doc__.split("\n\n", 1)[1].split("    python -m")[0] + "\n" + settings_help()))
    parser.add_argument("setting", nargs="?", help="print only this value: a dotted path (gate.metric) or a flat name")
    args = parser.parse_args(argv)
    try:
        config = PipelineConfig.from_env()
        if args.setting:
            value = config.get(args.setting)
            print(value if isinstance(value, str) else compact_json(_plain(value)))
        else:
            print(compact_json(config.to_dict()))
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
