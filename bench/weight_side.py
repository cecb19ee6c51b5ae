"""Benchmark section: weight-side corrections (cross-layer equalization, empirical bias
correction) and the int4 variants through LiteRT Quantizer, on the digits CNN (issue #31).

`make bench` runs `section` on the model it trained; `python -m bench.weight_side` trains the
digits CNN as `make bench` does (10 epochs, seed 42, 200 stratified calibration examples) and
prints the section alone.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import List

import numpy as np

from bench.common import md_table
from tfx_quantization.contracts import read_manifest
from tfx_quantization.post_training_quantizer.build import quantize_all
from tfx_quantization.quantization import data
from tfx_quantization.quantization.interpreter import TFLiteRunner, accuracy
from tfx_quantization.settings import QuantizeSettings

INTEGER = ["full_integer", "integer_only"]
SETTINGS = {"none": {}, "equalization": dict(cross_layer_equalization=True),
            "bias correction": dict(bias_correction=True),
            "both": dict(cross_layer_equalization=True, bias_correction=True)}
INT4 = ["float32", "full_integer", "int4_weights", "int4_blockwise"]
HEADER = ["corrections", *[f"{n} accuracy" for n in INTEGER],
          *[f"{n} mean abs. score difference" for n in INTEGER]]


def _scores(quantized_dir: str, name: str, spec, x) -> np.ndarray:
    path = Path(quantized_dir, read_manifest(quantized_dir).variants[name].file)
    return spec.scores(TFLiteRunner.for_spec(str(path), spec).predict(x))


def _accuracy(quantized_dir: str, name: str, spec, x, y) -> float:
    return accuracy(_scores(quantized_dir, name, spec, x), y)


def _corrections(tmp: Path, float_dir: str, spec, x, y, calibration_files: List[str]):
    """(one row per SETTINGS entry: accuracy and mean absolute class-score difference from the
    float model of each INTEGER variant, notes on what "both" equalized and corrected, the
    float model's accuracy)."""
    rows, notes = [], []
    reference = spec.scores(data.Serving(float_dir, spec)(x))  # the float model's: what the variants should match
    for what, switches in SETTINGS.items():
        out = str(tmp / f"wc-{what.replace(' ', '_')}")
        manifest = quantize_all(float_dir, out, QuantizeSettings(variants=INTEGER, **switches),
                                calibration_files=calibration_files)
        scores = {n: _scores(out, n, spec, x) for n in INTEGER}
        rows.append([what] + [f"{accuracy(scores[n], y):.4f}" for n in INTEGER]
                    + [f"{np.mean(np.abs(scores[n] - reference)):.5f}" for n in INTEGER])
        wc = manifest.weight_corrections
        if wc and what == "both":
            pairs = ", ".join(f"{p.producer}→{p.consumer} {p.producer_range_ratio_before:.3f}→"
                              f"{p.producer_range_ratio_after:.3f}" for p in wc.equalized_pairs)
            notes.append(f"Equalized pairs (producer's per-channel range ratio min/max before→after): {pairs}; "
                         f"{wc.equalization_sweeps} sweep(s); float output change {wc.output_change:.1e} of the "
                         "largest output. Bias correction removed a mean per-channel error of "
                         + ", ".join(f"{c.layer} {c.mean_abs_error:.2e} (max {c.max_abs_error:.2e})"
                                     for c in wc.corrected_layers) + ".")
    return rows, notes, accuracy(reference, y)


def rescaled(float_dir: str, out_dir: str, seed: int = 0) -> str:
    """The same float function with uneven channels: output channel i of the next-to-last
    Dense layer (and its bias) times f_i, the last Dense layer's input row i divided by f_i,
    f_i from 10^-2 to 10^2 in a seeded order (ReLU between them: relu(f x) = f relu(x)). One
    int8 scale for the whole Dense kernel (TF 2.16) then spends its range on the largest
    channels: the case cross-layer equalization undoes."""
    import tf_keras as keras

    from tfx_quantization import training
    from tfx_quantization.quantization.model_spec import ModelSpec

    loaded = training.load_keras_model(float_dir)
    model = keras.Model(loaded.inputs, loaded.outputs, name=loaded.name)
    first, last = [layer for layer in model.layers if type(layer) is keras.layers.Dense][-2:]
    f = np.random.RandomState(seed).permutation(np.logspace(-2, 2, first.units)).astype(np.float32)
    kernel, bias = first.get_weights()
    first.set_weights([kernel * f[None, :], bias * f])
    kernel, bias = last.get_weights()
    last.set_weights([kernel / f[:, None], bias])
    training.save_serving_model(model, out_dir, ModelSpec.read(float_dir))
    return out_dir


def section(tmp: Path, label: str, float_dir: str, calibration_files: List[str], eval_files: List[str]) -> List[str]:
    """The corrections' effect on the int8 variants (of the model, and of the same function
    with uneven Dense channels), and the int4 variants' size and accuracy."""
    tmp.mkdir(parents=True, exist_ok=True)
    spec = data.spec_for(float_dir, eval_files)
    x, y = data.parse_numpy(list(data.iter_serialized(eval_files)), spec)
    rows, notes, _ = _corrections(tmp / "as_trained", float_dir, spec, x, y, calibration_files)
    uneven = rescaled(float_dir, str(tmp / "uneven_model"))
    uneven_rows, uneven_notes, uneven_float = _corrections(tmp / "uneven", uneven, spec, x, y, calibration_files)
    out = str(tmp / "int4")
    manifest = quantize_all(float_dir, out, QuantizeSettings(variants=INT4), calibration_files=calibration_files)
    size_rows = []
    for name in INT4:
        entry = manifest.variants[name]
        if entry.status != "ok":
            size_rows.append([name, "failed: " + entry.reason[:100], "", ""])
            continue
        size_rows.append([name, f"{entry.size_bytes:,}", f"{entry.size_ratio_to_float32:.3f}",
                          f"{_accuracy(out, name, spec, x, y):.4f}"])
    float_acc = _accuracy(out, "float32", spec, x, y)
    return [f"## 10. Weight-side corrections and int4 weights: {label}", "",
            f"Float32 accuracy {float_acc:.4f} on {len(y)} eval examples. Each row converts the same float model with "
            "`QuantizeSettings(cross_layer_equalization=..., bias_correction=...)` and the same calibration sample; "
            "accuracy of the int8 variants on the eval split, and the mean absolute difference of their class scores "
            "from the float model's (`bench/weight_side.py`; alone: `python -m bench.weight_side`).", "",
            md_table(HEADER, rows), "", *notes, "",
            "The same float function with uneven channels (`bench/weight_side.py:rescaled`: the next-to-last Dense "
            "layer's output channels scaled by 10^-2..10^2, the head's input rows by the inverse; float accuracy "
            f"{uneven_float:.4f}), where the head's one int8 weight scale is spent on the largest channels:", "",
            md_table(HEADER, uneven_rows), "", *uneven_notes, "",
            "int4 weights through LiteRT Quantizer (`int4_weights`: `dynamic_wi4_afp32`; `int4_blockwise`: "
            "`dynamic_wi4b32_afp32`), beside float32 and full_integer:", "",
            md_table(["variant", "bytes", "vs float32", "accuracy"], size_rows), ""]


def main() -> None:
    from bench.common import PIXEL_KEYS, write_digits_splits
    from tfx_quantization import training
    from tfx_quantization.model_contract import ModelContract
    from tfx_quantization.representative_dataset_gen.sampling import run_sampling
    from tfx_quantization.settings import CalibrationSettings, TrainSettings

    tmp = Path(tempfile.mkdtemp(prefix="qp-weight-side-"))
    splits = write_digits_splits(tmp / "digits")
    run_sampling(splits["train"], str(tmp / "cal"),
                 CalibrationSettings(num_samples=200, strategy="stratified", label_key="label", seed=0))
    digits = ModelContract(inputs={"image": {"features": PIXEL_KEYS, "shape": [8, 8, 1]}}, num_classes=10)
    float_dir = str(tmp / "cnn" / "float")
    training.train(splits["train"], splits["eval"], float_dir, "", str(tmp / "cnn" / "logs"),
                   TrainSettings(epochs=10, seed=42), digits)
    lines = section(tmp, "digits CNN", float_dir, data.split_files(f"{tmp / 'cal'}/Split-calibration"),
                    data.split_files(splits["eval"]))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
