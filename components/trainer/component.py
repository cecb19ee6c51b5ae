"""QATTrainer: trains the float model, then fine-tunes a quantization-aware copy."""
from __future__ import annotations

from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.models import BUILTIN
from components.tfx_utils import to_json_param
from components.trainer import executor


class QATTrainerSpec(ComponentSpec):
    PARAMETERS = {
        "model_name": ExecutionParameter(type=str),
        "module_file": ExecutionParameter(type=str, optional=True),
        "model_kwargs": ExecutionParameter(type=str, optional=True),  # JSON dict
        "feature_keys": ExecutionParameter(type=str),  # JSON list
        "input_shape": ExecutionParameter(type=str),  # JSON list
        "label_key": ExecutionParameter(type=str),
        "num_classes": ExecutionParameter(type=int),
        "epochs": ExecutionParameter(type=int),
        "steps_per_epoch": ExecutionParameter(type=int),
        "qat_epochs": ExecutionParameter(type=int),
        "qat_steps_per_epoch": ExecutionParameter(type=int),
        "batch_size": ExecutionParameter(type=int),
        "learning_rate": ExecutionParameter(type=float),
        "qat_learning_rate": ExecutionParameter(type=float),
        "seed": ExecutionParameter(type=int),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "schema": ChannelParameter(type=standard_artifacts.Schema, optional=True),
    }
    OUTPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "qat_model": ChannelParameter(type=standard_artifacts.Model),
        "model_run": ChannelParameter(type=standard_artifacts.ModelRun),
    }


class QATTrainer(base_component.BaseComponent):
    """Float training then quantization-aware fine-tuning; both models are outputs.

    See components/trainer/README.md for the parameters and the user module contract.
    """

    SPEC_CLASS = QATTrainerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        feature_keys: List[str],
        input_shape: List[int],
        label_key: str,
        num_classes: int,
        model_name: str = "digits_cnn",
        module_file: Optional[str] = None,
        model_kwargs: Optional[Dict] = None,
        epochs: int = 10,
        steps_per_epoch: int = 0,
        qat_epochs: int = 2,
        qat_steps_per_epoch: int = 0,
        batch_size: int = 32,
        learning_rate: float = 1e-3,
        qat_learning_rate: float = 1e-4,
        seed: int = 42,
        schema: Optional[types.BaseChannel] = None,
    ):
        if not module_file and model_name not in BUILTIN:
            raise ValueError(
                f"unknown built-in model {model_name!r}: choose one of {sorted(BUILTIN)} or pass module_file"
            )
        if not feature_keys:
            raise ValueError("feature_keys is empty: name the example feature(s) that form the model input")
        spec = QATTrainerSpec(
            examples=examples,
            schema=schema,
            model_name=model_name,
            module_file=module_file,
            model_kwargs=to_json_param(model_kwargs or {}),
            feature_keys=to_json_param(list(feature_keys)),
            input_shape=to_json_param([int(d) for d in input_shape]),
            label_key=label_key,
            num_classes=num_classes,
            epochs=epochs,
            steps_per_epoch=steps_per_epoch,
            qat_epochs=qat_epochs,
            qat_steps_per_epoch=qat_steps_per_epoch,
            batch_size=batch_size,
            learning_rate=learning_rate,
            qat_learning_rate=qat_learning_rate,
            seed=seed,
            model=types.Channel(type=standard_artifacts.Model),
            qat_model=types.Channel(type=standard_artifacts.Model),
            model_run=types.Channel(type=standard_artifacts.ModelRun),
        )
        super().__init__(spec=spec)
