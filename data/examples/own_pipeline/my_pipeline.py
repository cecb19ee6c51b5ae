"""A platform team's own TFX pipeline with our stages after TFX's stock ones.

    CsvExampleGen (stock: train/eval 2:1) -> Trainer (stock, trainer_module.py)
      -> QATFineTuner -> RepresentativeDatasetGen -> PostTrainingQuantizer
      -> TFLiteEvaluator -> QuantizedModelPusher      (tfx_quantization)

Run it from anywhere, with the package installed (no PYTHONPATH, no repository checkout):

    python my_pipeline.py --data-root DIR_WITH_CSV --output-root OUT

The model contract (which signature TFLite converts, which features feed it, the label,
logits) is given once, to the first of our stages that sees the model (QATFineTuner); the
stages after it read it from the model artifacts. The registry is
OUT/serving/<model name>/<version>/.
"""
import os

# tensorflow-model-optimization needs Keras 2: this must come before TFX or TensorFlow is
# imported (tfx_quantization checks it and stops with a one-line error otherwise).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import argparse  # noqa: E402

from absl import logging as absl_logging  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

import tfx_quantization as tq  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PIXEL_KEYS = [f"pixel_{i:02d}" for i in range(64)]


def create_pipeline(data_root: str, output_root: str, train_steps: int = 300) -> tfx.dsl.Pipeline:
    examples = tfx.components.CsvExampleGen(input_base=data_root)  # TFX's default split: train, eval
    trainer = tfx.components.Trainer(
        module_file=os.path.join(HERE, "trainer_module.py"), examples=examples.outputs["examples"],
        train_args=tfx.proto.TrainArgs(num_steps=train_steps), eval_args=tfx.proto.EvalArgs(num_steps=10))
    fine_tuner = tq.QATFineTuner(
        examples=examples.outputs["examples"], model=trainer.outputs["model"],
        settings={"qat_epochs": 1},
        contract={"signature": "dense", "inputs": {"pixels": {"features": PIXEL_KEYS}},
                  "label_key": "label", "output_kind": "logits"})
    calibration = tq.RepresentativeDatasetGen(examples=examples.outputs["examples"],
                                              model=fine_tuner.outputs["qat_model"])
    # TFX's default ExampleGen output has no `validation` split, so the selective_integer
    # search (which validates on examples training never saw) is recorded as off, with the
    # reason, and the other variants go on; give ExampleGen a `validation` split to turn it on.
    quantizer = tq.PostTrainingQuantizer(
        model=trainer.outputs["model"], qat_model=fine_tuner.outputs["qat_model"],
        representative_dataset=calibration.outputs["representative_dataset"],
        validation_examples=examples.outputs["examples"])
    registry = {"destination": os.path.join(output_root, "serving"), "model_name": "own-digits"}
    evaluator = tq.TFLiteEvaluator(
        examples=examples.outputs["examples"], model=trainer.outputs["model"],
        quantized_models=quantizer.outputs["quantized_models"], settings={"max_accuracy_drop": 0.02},
        registry=registry)
    pusher = tq.QuantizedModelPusher(
        quantized_models=quantizer.outputs["quantized_models"], blessing=evaluator.outputs["blessing"],
        evaluation=evaluator.outputs["evaluation"], settings=registry)
    return tfx.dsl.Pipeline(
        pipeline_name="own-digits", pipeline_root=os.path.join(output_root, "pipeline_root"),
        components=[examples, trainer, fine_tuner, calibration, quantizer, evaluator, pusher],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(output_root, "metadata.sqlite")),
        enable_cache=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder holding the CSV file(s) CsvExampleGen reads")
    parser.add_argument("--output-root", required=True, help="pipeline root, ML Metadata and the registry")
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args()
    absl_logging.set_verbosity(absl_logging.INFO)  # TFX's progress lines, and ours with them
    output_root = os.path.abspath(args.output_root)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(os.path.abspath(args.data_root), output_root,
                                                           args.train_steps))
    # The run in a few lines (selected variant, gate figures, pushed version, report), read
    # from ML Metadata; `tfx-quantization-outcome --metadata OUT/metadata.sqlite` prints it as JSON.
    from tfx_quantization.pipeline.summary import summarize

    print("\n" + (summarize(os.path.join(output_root, "metadata.sqlite")) or "no evaluated run recorded"))


if __name__ == "__main__":
    main()
