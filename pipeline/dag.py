"""create_pipeline(config): a pure factory for the quantization DAG.

ExampleGen → QATTrainer ─────────────┐
           → RepresentativeDatasetGen → PostTrainingQuantizer → TFLiteEvaluator → Pusher
  latest PushedModel (resolver) ──────────────────────────────────┘ (no-regression baseline)
"""
from __future__ import annotations

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tfx import v1 as tfx

from components import contracts
from components.post_training_quantizer.component import PostTrainingQuantizer
from components.pusher.component import QuantizedModelPusher
from components.representative_dataset_gen.component import RepresentativeDatasetGen
from components.tflite_evaluator.component import TFLiteEvaluator
from components.trainer.component import QATTrainer
from pipeline.config import PipelineConfig


def example_gen(config: PipelineConfig):
    input_config = tfx.proto.Input(
        splits=[tfx.proto.Input.Split(name="single_split", pattern=config.input_pattern)]
    )
    # Hash split train:eval = 2:1, deterministic per example.
    output_config = tfx.proto.Output(
        split_config=tfx.proto.SplitConfig(
            splits=[
                tfx.proto.SplitConfig.Split(name=contracts.TRAIN_SPLIT, hash_buckets=2),
                tfx.proto.SplitConfig.Split(name=contracts.EVAL_SPLIT, hash_buckets=1),
            ]
        )
    )
    gen_cls = (
        tfx.components.CsvExampleGen
        if config.data_format == "csv"
        else tfx.components.ImportExampleGen
    )
    return gen_cls(
        input_base=config.data_root, input_config=input_config, output_config=output_config
    )


def create_components(config: PipelineConfig) -> list:
    gen = example_gen(config)
    examples = gen.outputs["examples"]
    trainer = QATTrainer(examples=examples, settings=config.train)
    calibration = RepresentativeDatasetGen(examples=examples, settings=config.calibration)
    quantizer = PostTrainingQuantizer(
        model=trainer.outputs["model"],
        qat_model=trainer.outputs["qat_model"],
        representative_dataset=calibration.outputs["representative_dataset"],
        # selective_integer's validation data: quantize.validation_split, never the gate's split.
        validation_examples=examples,
        settings=config.quantize,
    )
    # What is deployed now, according to the last Pusher run (pushed or not): the evaluator
    # re-evaluates it on this run's eval split and refuses a regression against it.
    deployed = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        pushed_model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.PushedModel),
    ).with_id("latest_pushed_model_resolver")
    evaluator = TFLiteEvaluator(
        examples=examples,
        model=trainer.outputs["model"],
        quantized_models=quantizer.outputs["quantized_models"],
        baseline=deployed.outputs["pushed_model"],
        settings=config.gate,
    )
    pusher = QuantizedModelPusher(
        quantized_models=quantizer.outputs["quantized_models"],
        blessing=evaluator.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"],
        settings=config.push,
    )
    return [gen, trainer, calibration, quantizer, deployed, evaluator, pusher]


def create_pipeline(config: PipelineConfig, local_metadata: bool = True) -> tfx.dsl.Pipeline:
    """The DAG. local_metadata: an sqlite ML Metadata store at config.metadata_path (the
    local orchestrator); False for orchestrators that keep metadata themselves (Kubeflow)."""
    metadata_connection_config = (
        tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)
        if local_metadata else None
    )
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=config.beam_pipeline_args,
    )
