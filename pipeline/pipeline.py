"""create_pipeline(config): a pure factory for the quantization DAG.

ExampleGen → QATTrainer ─────────────┐
           → RepresentativeDatasetGen → PostTrainingQuantizer → TFLiteEvaluator → Pusher
  latest PushedModel (resolver) ──────────────────────────────────┘ (no-regression baseline)
"""
from __future__ import annotations

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tfx import v1 as tfx

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
                tfx.proto.SplitConfig.Split(name="train", hash_buckets=2),
                tfx.proto.SplitConfig.Split(name="eval", hash_buckets=1),
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
    trainer = QATTrainer(
        examples=examples,
        feature_keys=config.feature_keys,
        input_shape=config.input_shape,
        label_key=config.label_key,
        num_classes=config.num_classes,
        model_name=config.model,
        module_file=config.module_file or None,
        model_kwargs=config.model_kwargs,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        qat_epochs=config.qat_epochs,
        qat_steps_per_epoch=config.qat_steps_per_epoch,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        qat_learning_rate=config.qat_learning_rate,
        seed=config.seed,
    )
    calibration = RepresentativeDatasetGen(
        examples=examples,
        split="train",
        num_samples=config.calibration_samples,
        strategy=config.calibration_strategy,
        label_key=config.label_key if config.calibration_strategy == "stratified" else None,
        seed=config.seed,
    )
    quantizer = PostTrainingQuantizer(
        model=trainer.outputs["model"],
        qat_model=trainer.outputs["qat_model"],
        representative_dataset=calibration.outputs["representative_dataset"],
        variants=config.variants or None,
        integer_io_type=config.integer_io_type,
        validation_examples=examples,
        validation_split=config.selective_validation_split,
        validation_samples=config.validation_samples,
        selective_max_drop=config.max_accuracy_drop if config.max_accuracy_drop is not None else 0.01,
        max_float_layers=config.max_float_layers,
        max_search_steps=config.max_search_steps,
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
        max_accuracy_drop=config.max_accuracy_drop,
        max_relative_drop=config.max_relative_drop,
        max_model_bytes=config.max_model_bytes,
        max_latency_ms=config.max_latency_ms,
        min_accuracy=config.min_accuracy,
        allow_float32=config.allow_float32,
        selection=config.selection_policy,
        metric=config.metric,
        latency_runs=config.latency_runs,
        num_threads=config.num_threads,
    )
    pusher = QuantizedModelPusher(
        quantized_models=quantizer.outputs["quantized_models"],
        blessing=evaluator.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"],
        push_destination=config.push_destination,
        model_name=config.served_model_name,
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
