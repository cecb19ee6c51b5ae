"""One evaluator run in a process of its own, for the scale table:
python -m bench.scale_worker EVAL_FILE TFLITE_FILE WORKERS OUT_JSON
Prints nothing; writes {seconds, peak_rss_mb, accuracy} to OUT_JSON.

Peak memory: bench.common.peak_rss (this process and the Beam workers it starts).
"""
import json
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from bench.common import peak_rss
from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.tflite_evaluator import beam_pass


def main(eval_file, tflite, workers, out):
    workers = int(workers)
    args = ["--direct_num_workers=1"] if workers == 1 else [
        "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    spec = ModelSpec.single(["image"], [8, 8, 1], "label", 10, feature_dtypes={"image": "float32"})
    with peak_rss() as peak:
        start = time.perf_counter()
        counts = beam_pass.run_evaluation(
            lambda: beam.Pipeline(options=PipelineOptions(args)), eval_pattern=eval_file,
            tflite_models={"model": tflite}, float_model_dir=None, spec_json=spec.to_json(),
            output_path=out + ".counts")
        seconds = time.perf_counter() - start
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "peak_rss_mb": peak[0] / 2**20,
                   "accuracy": counts["model"]["top1"] / counts["model"]["n"], "n": counts["model"]["n"]}, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
