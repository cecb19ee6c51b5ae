"""TFLiteEvaluator: every variant against the float model, the gate, selection, report."""
from __future__ import annotations

from typing import List, Optional, Union

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.quantization import convert
from components.tflite_evaluator import executor, gate


class TFLiteEvaluatorSpec(ComponentSpec):
    PARAMETERS = {
        "max_accuracy_drop": ExecutionParameter(type=float, optional=True),
        "max_relative_drop": ExecutionParameter(type=float, optional=True),
        "max_model_bytes": ExecutionParameter(type=int, optional=True),
        "max_latency_ms": ExecutionParameter(type=float, optional=True),
        "min_accuracy": ExecutionParameter(type=float, optional=True),
        "allow_float32": ExecutionParameter(type=int),
        "selection": ExecutionParameter(type=str),  # 'smallest', 'fastest' or a JSON list
        "metric": ExecutionParameter(type=str),
        "top_k": ExecutionParameter(type=int),
        "latency_runs": ExecutionParameter(type=int),
        "num_threads": ExecutionParameter(type=int),
        "batch_size": ExecutionParameter(type=int),
        "split": ExecutionParameter(type=str),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "quantized_models": ChannelParameter(type=standard_artifacts.Model),
        "baseline": ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
    }
    OUTPUTS = {
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class TFLiteEvaluator(base_beam_component.BaseBeamComponent):
    """Evaluates the quantizer's variants and the float model in one Beam pass, gates,
    selects and blesses; see README.md for the gate semantics."""

    SPEC_CLASS = TFLiteEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(
        self,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        quantized_models: types.BaseChannel,
        baseline: Optional[types.BaseChannel] = None,
        max_accuracy_drop: Optional[float] = 0.01,
        max_relative_drop: Optional[float] = None,
        max_model_bytes: Optional[int] = None,
        max_latency_ms: Optional[float] = None,
        min_accuracy: Optional[float] = None,
        allow_float32: bool = False,
        selection: Union[str, List[str]] = gate.SMALLEST,
        metric: str = "accuracy",
        top_k: int = 5,
        latency_runs: int = 50,
        num_threads: int = 1,
        batch_size: int = 256,
        split: str = "eval",
    ):
        cfg = gate.GateConfig(max_accuracy_drop, max_relative_drop, max_model_bytes, max_latency_ms,
                              min_accuracy, allow_float32, selection, metric)
        cfg.validate(list(convert.ALL_VARIANTS))
        super().__init__(
            spec=TFLiteEvaluatorSpec(
                examples=examples, model=model, quantized_models=quantized_models, baseline=baseline,
                max_accuracy_drop=max_accuracy_drop, max_relative_drop=max_relative_drop,
                max_model_bytes=max_model_bytes, max_latency_ms=max_latency_ms, min_accuracy=min_accuracy,
                allow_float32=int(allow_float32),
                selection=executor.encode_selection(selection), metric=metric, top_k=top_k,
                latency_runs=latency_runs, num_threads=num_threads, batch_size=batch_size, split=split,
                evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
                blessing=types.Channel(type=standard_artifacts.ModelBlessing),
            )
        )
