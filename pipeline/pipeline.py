"""create_pipeline(config): a pure factory for the quantization DAG."""
from __future__ import annotations

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from tfx import v1 as tfx

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


def create_pipeline(config: PipelineConfig) -> tfx.dsl.Pipeline:
    components_list = [example_gen(config)]
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components_list,
        enable_cache=config.enable_cache,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path
        ),
        beam_pipeline_args=config.beam_pipeline_args,
    )
