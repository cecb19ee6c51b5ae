"""create_pipeline(config): a pure factory for the quantization DAG.

ExampleGen → QATTrainer ─────────────┐
           → RepresentativeDatasetGen → PostTrainingQuantizer → TFLiteEvaluator → Pusher

With config.tfx_module_file, TFX's stock stages take the trainer's place:
ExampleGen → StatisticsGen → SchemaGen → Transform → Trainer → QATFineTuner ─┐
                                         (transformed examples) → RepresentativeDatasetGen → ...
config.contract is given once, to the first stage that produces a model (QATTrainer, or
QATFineTuner after the stock Trainer), which records it on its Model artifacts; the later
stages read it from their input artifacts. The evaluator reads the deployed model (the
no-regression baseline) from the registry the Pusher writes: the push destination's LATEST
version.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from google.protobuf import json_format
from tfx import v1 as tfx
from tfx.orchestration import data_types

from tfx_quantization import contracts
from tfx_quantization.post_training_quantizer.component import PostTrainingQuantizer
from tfx_quantization.qat_fine_tuner.component import QATFineTuner
from tfx_quantization.pusher.component import QuantizedModelPusher
from tfx_quantization.settings import FineTuneSettings
from tfx_quantization.model_contract import ModelContract
from tfx_quantization.registry import Registry
from tfx_quantization.representative_dataset_gen.component import RepresentativeDatasetGen
from tfx_quantization.tflite_evaluator.component import TFLiteEvaluator
from tfx_quantization.trainer.component import QATTrainer
from tfx_quantization.pipeline.config import PipelineConfig


def input_config(config: PipelineConfig):
    return tfx.proto.Input(splits=[tfx.proto.Input.Split(name="single_split", pattern=config.input_pattern)])


def example_gen(config: PipelineConfig, params: Optional["RuntimeParameters"] = None):
    # Hash split train:validation:eval = 5:1:3, deterministic per example. Training sees
    # train only; the selective search judges on validation; the gate on eval.
    output_config = tfx.proto.Output(
        split_config=tfx.proto.SplitConfig(
            splits=[
                tfx.proto.SplitConfig.Split(name=contracts.TRAIN_SPLIT, hash_buckets=5),
                tfx.proto.SplitConfig.Split(name=contracts.VALIDATION_SPLIT, hash_buckets=1),
                tfx.proto.SplitConfig.Split(name=contracts.EVAL_SPLIT, hash_buckets=3),
            ]
        )
    )
    gen_cls = (
        tfx.components.CsvExampleGen
        if config.data_format == "csv"
        else tfx.components.ImportExampleGen
    )
    return gen_cls(
        input_base=params.data_root if params else config.data_root,
        input_config=params.input_config if params else input_config(config),
        output_config=output_config,
    )


@dataclasses.dataclass
class RuntimeParameters:
    """Kubeflow runtime parameters: what operators change between runs without recompiling.
    Each defaults to the compiled configuration's value."""

    data_root: data_types.RuntimeParameter  # ExampleGen's input_base: the data's folder or URI
    input_config: data_types.RuntimeParameter  # ExampleGen's Input proto as JSON: pattern, span
    gate_overrides: data_types.RuntimeParameter  # JSON merged over the gate settings
    push_settings: data_types.RuntimeParameter  # PushSettings as JSON: the registry

    NAMES = ("data_root", "input_config", "gate_overrides", "push_settings")

    @classmethod
    def for_config(cls, config: PipelineConfig) -> "RuntimeParameters":
        return cls(
            data_root=data_types.RuntimeParameter(name="data_root", ptype=str, default=config.data_root),
            input_config=data_types.RuntimeParameter(
                name="input_config", ptype=str, default=json_format.MessageToJson(input_config(config), indent=0)),
            gate_overrides=data_types.RuntimeParameter(name="gate_overrides", ptype=str, default="{}"),
            push_settings=data_types.RuntimeParameter(name="push_settings", ptype=str, default=config.push.to_json()),
        )


def create_components(config: PipelineConfig, params: Optional[RuntimeParameters] = None) -> list:
    """The DAG's components. params: Kubeflow runtime parameters (None: everything fixed)."""
    gen = example_gen(config, params)
    examples = gen.outputs["examples"]
    if config.tfx_module_file:
        return [gen] + stock_tfx_components(config, examples, params)
    # The contract, given once: the trainer builds its model from it and records it on both models.
    trainer = QATTrainer(examples=examples, contract=config.contract, settings=config.train)
    return [gen, trainer] + quantization_stages(
        config, examples, trainer.outputs["model"], trainer.outputs["qat_model"], params)


def stock_tfx_components(config: PipelineConfig, examples, params: Optional[RuntimeParameters] = None) -> list:
    """An existing TFX pipeline's stages, then ours: StatisticsGen → SchemaGen → Transform
    (the module's preprocessing_fn; every split transformed) → stock Trainer (its run_fn, on
    the transformed examples) → QATFineTuner (quantization-aware fine-tuning of the Trainer's
    Keras model) → the quantization stages, all on the transformed examples. config.contract
    says how the Trainer's model meets them: given to the fine-tuner, which records it on
    its `qat_model` for the later stages."""
    stats = tfx.components.StatisticsGen(examples=examples)
    schema = tfx.components.SchemaGen(statistics=stats.outputs["statistics"], infer_feature_shape=True)
    transform = tfx.components.Transform(examples=examples, schema=schema.outputs["schema"],
                                         module_file=config.tfx_module_file, disable_statistics=True)
    transformed = transform.outputs["transformed_examples"]
    trainer = tfx.components.Trainer(
        module_file=config.tfx_module_file, examples=transformed,
        transform_graph=transform.outputs["transform_graph"], schema=schema.outputs["schema"],
        train_args=tfx.proto.TrainArgs(num_steps=config.tfx_train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=config.tfx_eval_steps),
        custom_config={"seed": config.train.seed})
    fine_tuner = QATFineTuner(examples=transformed, model=trainer.outputs["model"],
                              settings=FineTuneSettings.coerce(config.train), contract=config.contract)
    return [stats, schema, transform, trainer, fine_tuner] + quantization_stages(
        config, transformed, trainer.outputs["model"], fine_tuner.outputs["qat_model"], params)


def quantization_stages(config: PipelineConfig, examples, model, qat_model, params: Optional[RuntimeParameters] = None,
                        contract: Optional[ModelContract] = None) -> list:
    """Calibration, quantizer, evaluator and pusher over `examples` (any ExampleGen's or
    Transform's transformed_examples), the float `model` and the `qat_model` (None: no QAT
    variant). contract: how the models meet the examples; None: the one recorded on them
    (the QAT model's after a stock Trainer). Calibration gets the model that carries the
    contract (the QAT model when there is one), for the label key its settings leave ''."""
    calibration = RepresentativeDatasetGen(examples=examples, settings=config.calibration,
                                           model=qat_model if qat_model is not None else model)
    quantizer = PostTrainingQuantizer(
        model=model,
        qat_model=qat_model,
        representative_dataset=calibration.outputs["representative_dataset"],
        # selective_integer's validation data: quantize.validation_split, never the gate's split.
        validation_examples=examples,
        settings=config.quantize,
        contract=contract,
    )
    push = params.push_settings if params else config.push
    # The deployed baseline is the registry's LATEST version, read by the evaluator itself:
    # the registry is the one truth for what is deployed (no resolver node, which
    # open-source Kubeflow Pipelines cannot run).
    # Local runs: what is deployed now is part of the evaluator's cache key. Kubeflow: the
    # evaluator task is never cached (kubeflow/runner.py), since the spec is compiled once.
    deployed_state = None if params else Registry(config.push.destination, config.push.model_name).state()
    evaluator = TFLiteEvaluator(
        examples=examples,
        model=model,
        quantized_models=quantizer.outputs["quantized_models"],
        settings=config.gate,
        registry=push,
        overrides=params.gate_overrides if params else None,
        deployed_state=deployed_state,
        contract=contract,
    )
    pusher = QuantizedModelPusher(
        quantized_models=quantizer.outputs["quantized_models"],
        blessing=evaluator.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"],
        settings=push,
    )
    return [calibration, quantizer, evaluator, pusher]


def create_pipeline(config: PipelineConfig, local_metadata: bool = True,
                    params: Optional[RuntimeParameters] = None) -> tfx.dsl.Pipeline:
    """The DAG. local_metadata: an sqlite ML Metadata store at config.metadata_path (the
    local orchestrator); False for orchestrators that keep metadata themselves (Kubeflow).
    params: Kubeflow runtime parameters."""
    metadata_connection_config = (
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
        if local_metadata else None
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config, params),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args,
    )
