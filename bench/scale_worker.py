"""One evaluator run in a process of its own, for the scale table:
python -m bench.scale_worker EVAL_FILE TFLITE_FILE WORKERS OUT_JSON
Prints nothing; writes {seconds, peak_rss_mb, accuracy} to OUT_JSON.

Peak memory is sampled (every 20 ms) as the summed resident set of this process and every
process it started (the Beam workers). ru_maxrss is not used: on Linux a child's figure
includes the parent's memory at fork, before exec.
"""
import json
import sys
import threading
import time

import psutil

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from tfx_quantization.quantization.model_spec import ModelSpec
from tfx_quantization.tflite_evaluator import beam_pass


def main(eval_file, tflite, workers, out):
    workers = int(workers)
    args = ["--direct_num_workers=1"] if workers == 1 else [
        "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"]
    spec = ModelSpec.single(["image"], [8, 8, 1], "label", 10, feature_dtypes={"image": "float32"})
    peak, done = [0], threading.Event()

    def sample():
        me = psutil.Process()
        while not done.is_set():
            try:
                total = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
                peak[0] = max(peak[0], total)
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    counts = beam_pass.run_evaluation(
        lambda: beam.Pipeline(options=PipelineOptions(args)), eval_pattern=eval_file,
        tflite_models={"model": tflite}, float_model_dir=None, spec_json=spec.to_json(),
        output_path=out + ".counts")
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    with open(out, "w") as f:
        json.dump({"seconds": seconds, "peak_rss_mb": peak[0] / 2**20,
                   "accuracy": counts["model"]["top1"] / counts["model"]["n"], "n": counts["model"]["n"]}, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
