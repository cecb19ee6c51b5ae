"""Benchmark section 11: the activation-range method chosen on the validation split, checked on
eval (issue #31: "on the digits CNN and the MobileNetV2-style model, the chosen method is never
worse than min/max on eval; the choice must not overfit the validation split").

For each model, the PostTrainingQuantizer's own sweep (quantize_all with
QuantizeSettings.calibration_methods = every method of quantization/ranges.py) chooses on the
validation split as the pipeline does: a method replaces min/max only when the lower end of
its paired gain interval over min/max on validation is above 0. Then every method's
integer_only model (int8 I/O; bench.common.method_variants: one calibration, one collection
of statistics) is measured on the eval split, which the choice never saw, with the paired
interval of its eval gain over min/max (stats.paired_drop, as the sweep and the gate compute
it).

`make bench` runs `section` on the digits CNN and the MobileNetV2-style model it trained in
section 1; `make bench-choice` (`python -m bench.range_choice`) trains both as section 1 does
(float phase only: the float model is the same), runs the section and rewrites it in
BENCHMARKS.md. QP_BENCH_WORKDIR: a folder kept between runs, whose trained models are reused.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from bench.common import PIXEL_KEYS, REPO, md_table, method_variants, replace_section, write_digits_splits
from tfx_quantization.contracts import CALIBRATION_METHODS, MINMAX
from tfx_quantization.post_training_quantizer.build import quantize_all
from tfx_quantization.quantization import data, ranges
from tfx_quantization.quantization.interpreter import TFLiteRunner
from tfx_quantization.representative_dataset_gen.sampling import run_sampling
from tfx_quantization.settings import CalibrationSettings, QuantizeSettings

log = logging.getLogger("bench")
TITLE = "## 11. Activation-range method chosen on validation, checked on eval"
VARIANTS = ["float32", "integer_only"]
CALIBRATION_SAMPLES, CALIBRATION_SEED = 200, 0  # section 1's calibration sample
EXTRA_SEEDS = (1, 2)  # the sweep again on samples drawn with these seeds: is the choice the sample's?
HEADER = ["model", "ranges", "validation accuracy (sweep)", "validation gain over min/max, pp [interval]",
          "eval accuracy", "eval vs float (pp)", "eval gain over min/max, pp [interval]"]


def _pp(gain: float, low: float, high: float) -> str:
    return f"{100 * gain + 0.0:+.2f} [{100 * low + 0.0:+.2f}, {100 * high + 0.0:+.2f}]"


def _right(content: bytes, spec, x, y) -> np.ndarray:
    """bool [n]: whether the model's top class is the label, per eval example."""
    return np.argmax(spec.scores(TFLiteRunner.for_spec(content, spec).predict(x)), axis=-1) == y


def measure(tmp: Path, float_dir: str, calibration_files: List[str], validation_files: List[str],
            eval_files: List[str]) -> Optional[dict]:
    """The sweep of one model on one calibration sample, and every method on eval: {sweep (the
    manifest's RangeSweep), built_method, float (eval accuracy), built (the integer_only as
    built: bool [n] right per eval example), right ({method: bool [n]}), gains ({method: (eval
    gain over min/max, interval low, high)}), naive (the method a rule taking the best
    validation accuracy, without the interval, would choose; min/max first on ties)}; None
    when the sweep failed (warnings: the manifest's)."""
    settings = QuantizeSettings(variants=VARIANTS, calibration_methods=list(CALIBRATION_METHODS),
                                validation_samples=1000)
    manifest = quantize_all(float_dir, str(tmp), settings, calibration_files=calibration_files,
                            validation_files=validation_files)
    sweep = manifest.activation_ranges
    if sweep is None:
        return {"warnings": manifest.warnings}
    spec = data.spec_for(float_dir, eval_files)
    x, y = data.parse_numpy(list(data.iter_serialized(eval_files)), spec)
    read = lambda name: (tmp / manifest.variants[name].file).read_bytes()  # noqa: E731
    calibration = data.representative_dataset(calibration_files, spec)
    right = {m: _right(c, spec, x, y) for m, c in method_variants(float_dir, calibration, spec, CALIBRATION_METHODS,
                                                                   percentile=sweep.percentile).items()}
    gains = {}
    for method in CALIBRATION_METHODS:
        drop = ranges._paired_gain(right[MINMAX], right[method], sweep.confidence)
        gains[method] = (-drop.drop, -drop.high, -drop.low)
    measured = [r for r in sweep.methods if r.validation_accuracy is not None]
    naive = max(measured, key=lambda r: r.validation_accuracy).method  # max keeps the first (min/max) on ties
    return dict(sweep=sweep, built_method=manifest.variants["integer_only"].calibration_method or MINMAX,
                float=float(np.mean(_right(read("float32"), spec, x, y))),
                built=_right(read("integer_only"), spec, x, y),
                right=right, gains=gains, naive=naive)


def _verdict(gain: float, low: float, high: float, chosen: str) -> str:
    if chosen == MINMAX:
        return "the chosen model is min/max's on eval too (gain 0 by construction)"
    if gain >= 0:
        return f"on eval {chosen} is {_pp(gain, low, high)} pp against min/max: not worse"
    if high >= 0:
        return (f"on eval {chosen} is {_pp(gain, low, high)} pp against min/max: WORSE on this split, within chance "
                "(the interval holds 0)")
    return f"on eval {chosen} is {_pp(gain, low, high)} pp against min/max: WORSE beyond chance"


def _table(label: str, m: dict) -> List[list]:
    sweep, right, gains = m["sweep"], m["right"], m["gains"]
    validation = {r.method: r for r in sweep.methods}
    rows = [[label, "float32", "", "", f"{m['float']:.4f}", "+0.00", ""]]
    for method in CALIBRATION_METHODS:
        v = validation.get(method)
        if v is None or v.validation_accuracy is None:
            val_acc, val_gain = "–", (f"failed: {v.error[:60]}" if v else "–")
        else:
            val_acc = f"{v.validation_accuracy:.4f}"
            val_gain = "reference" if method == MINMAX else _pp(v.gain_over_minmax, v.gain_low, v.gain_high)
        acc = float(np.mean(right[method]))
        rows.append([label, method + (" **(chosen)**" if method == sweep.chosen else ""), val_acc, val_gain,
                     f"{acc:.4f}", f"{100 * (acc - m['float']) + 0.0:+.2f}",
                     "reference" if method == MINMAX else _pp(*gains[method])])
    built = float(np.mean(m["built"]))
    rows.append([label, f"integer_only as built (ranges: {m['built_method']})", "", "", f"{built:.4f}",
                 f"{100 * (built - m['float']) + 0.0:+.2f}", ""])
    return rows


def _reading(label: str, m: dict) -> List[str]:
    sweep, gains, chosen, naive = m["sweep"], m["gains"], m["sweep"].chosen, m["naive"]
    worse = [f"{x} ({100 * gains[x][0]:+.2f} pp)" for x in CALIBRATION_METHODS if x != MINMAX and gains[x][0] < 0]
    same_built = bool(np.array_equal(m["built"], m["right"][chosen]))
    return [
        f"- {label}: the sweep chose **{chosen}** ({sweep.num_validation_examples} validation examples, "
        f"{sweep.num_tensors} activation tensors, {sweep.seconds:.0f} s): {sweep.why}. "
        f"So {_verdict(*gains[chosen], chosen)}."
        + ("" if same_built else f" The integer_only variant as built ({m['built_method']}) does not answer every "
                                 f"eval example as the {chosen} row does."),
        f"- {label}: a rule taking the best validation accuracy without the interval would have chosen {naive}"
        + ("" if naive == MINMAX else f", {_pp(*gains[naive])} pp against min/max on eval")
        + f". Methods behind min/max on eval: {', '.join(worse) or 'none'}.",
    ]


def section(tmp: Path, models: Dict[str, str], calibration_files: List[str], validation_files: List[str],
            eval_files: List[str], train_dir: Optional[str] = None, seeds: Sequence[int] = EXTRA_SEEDS) -> List[str]:
    """Section 11's lines for `models` ({label: float SavedModel folder}), with the calibration,
    validation and eval record files every model shares; with `train_dir` (the train split's
    folder), the sweep again on calibration samples drawn with each of `seeds` (200 examples,
    stratified, as the main one)."""
    tmp.mkdir(parents=True, exist_ok=True)
    rows, reading, summary, tally = [], [], [], []
    samples = {CALIBRATION_SEED: calibration_files}
    for seed in seeds if train_dir else ():
        run_sampling(train_dir, str(tmp / f"cal{seed}"), CalibrationSettings(
            num_samples=CALIBRATION_SAMPLES, strategy="stratified", label_key="label", seed=seed))
        samples[seed] = data.split_files(f"{tmp / f'cal{seed}'}/Split-calibration")
    for i, (label, float_dir) in enumerate(models.items()):
        for seed, files in samples.items():
            m = measure(tmp / f"m{i}_{seed}", float_dir, files, validation_files, eval_files)
            if m.get("sweep") is None:
                line = f"- {label}, calibration seed {seed}: the sweep failed ({'; '.join(m['warnings'])[:300]})."
                reading.append(line)
                continue
            chosen, naive, gains = m["sweep"].chosen, m["naive"], m["gains"]
            log.info("11. %s, calibration seed %d: chose %s; eval gain %s pp", label, seed, chosen, _pp(*gains[chosen]))
            if seed == CALIBRATION_SEED:
                rows += _table(label, m)
                reading += _reading(label, m)
            summary.append([label, seed, f"{np.mean(m['right'][MINMAX]):.4f}", chosen,
                            "reference" if chosen == MINMAX else _pp(*gains[chosen]),
                            naive, "reference" if naive == MINMAX else _pp(*gains[naive]),
                            ", ".join(f"{x} {100 * gains[x][0] + 0.0:+.2f}" for x in CALIBRATION_METHODS if x != MINMAX)])
            tally.append((chosen, gains[chosen][0], naive, gains[naive][0],
                          [gains[x][0] for x in CALIBRATION_METHODS if x != MINMAX]))
    seeds_md = [] if len(summary) <= len(models) else [
        "The same sweep on calibration samples drawn with other seeds (200 stratified train examples each; the "
        "validation and eval splits unchanged): what it chose, its eval gain over min/max, what the best validation "
        "accuracy alone would have chosen and its eval gain, and every method's eval gain (pp).", "",
        md_table(["model", "calibration seed", "min/max eval accuracy", "chosen", "chosen: eval gain, pp [interval]",
                  "best on validation", "its eval gain, pp [interval]", "every method's eval gain (pp)"], summary), ""]
    return [
        TITLE, "",
        "Does the activation-range method the pipeline chooses on the validation split hold on eval? For each "
        "model, `quantize_all` with `QuantizeSettings(calibration_methods=` all five`)` runs the sweep as the "
        "PostTrainingQuantizer does (`components/quantization/ranges.py`: a method replaces min/max only when the "
        "lower end of its paired gain interval over min/max on validation is above 0, one-sided 0.95), and builds "
        "`integer_only` with the choice. Then each method's `integer_only` model (int8 I/O, from one calibration "
        "and one collection of statistics) is measured on the eval split, which the choice never saw, with the "
        "paired interval of its gain over min/max (Newcombe, `stats.paired_drop`, one-sided 0.95 as the gate). "
        "The sweep's validation figures are of the same models with float I/O. Models as section 1 trains them, "
        f"calibrated on the same {CALIBRATION_SAMPLES} examples (seed {CALIBRATION_SEED}); alone: `make bench-choice` "
        "(`python -m bench.range_choice`).", "",
        md_table(HEADER, rows), "", *reading, "", *seeds_md, *_overall(tally), ""]


def _overall(tally: List[tuple]) -> List[str]:
    """The reading over every sweep: tally holds (chosen, its eval gain, best on validation,
    its eval gain, [every other method's eval gain]) per model and calibration sample."""
    if not tally:
        return []
    moved = [(c, g) for c, g, _, _, _ in tally if c != MINMAX]
    worse = [g for _, g in moved if g < 0]
    naive = [(n, g) for _, _, n, g, _ in tally if n != MINMAX]
    every = [g for *_, gs in tally for g in gs]
    text = (f"Over the {len(tally)} sweeps (model × calibration sample) the chosen method "
            + ("was min/max every time, so it was never worse than min/max on eval by construction: the interval "
               "rule found no method better than min/max on validation beyond chance on these two models. This shows "
               "the rule's fall-back, not a gain from the range methods here."
               if not moved else
               f"differed from min/max {len(moved)} time(s), with eval gains "
               + ", ".join(f"{c} {100 * g + 0.0:+.2f} pp" for c, g in moved)
               + (f"; worse than min/max on eval {len(worse)} time(s)." if worse else ": never worse than min/max."))
            + (f" Taking the best validation accuracy without the interval would have left min/max {len(naive)} "
               "time(s), for " + ", ".join(f"{n} ({100 * g + 0.0:+.2f} pp on eval)" for n, g in naive) + "."
               if naive else " The best validation accuracy alone would also have kept min/max every time.")
            + f" Of the {len(every)} method-by-sample eval gains, {sum(g < 0 for g in every)} are below 0 (the "
            f"lowest {100 * min(every) + 0.0:+.2f} pp) and {sum(g > 0 for g in every)} above (the highest "
            f"{100 * max(every) + 0.0:+.2f} pp).")
    return [text]


def main() -> None:
    """`make bench-choice`: trains the two models as section 1 does, then rewrites section 11."""
    from tfx_quantization import training
    from tfx_quantization.model_contract import ModelContract
    from tfx_quantization.settings import TrainSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("tensorflow", "apache_beam", "absl", "components"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    keep = os.environ.get("QP_BENCH_WORKDIR")
    tmp = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="qp-choice-"))
    # Section 1's training settings (bench/run.py: 1a and 1c).
    configs = {"digits CNN": TrainSettings(epochs=10, seed=42),
               "MobileNetV2-style digits": TrainSettings(model="mobilenet_v2",
                                                         model_kwargs={"alpha": 0.35, "image_size": 32},
                                                         epochs=15, seed=42)}
    try:
        splits = write_digits_splits(tmp / "digits")
        if not (tmp / "cal").is_dir():
            run_sampling(splits["train"], str(tmp / "cal"),
                         CalibrationSettings(num_samples=CALIBRATION_SAMPLES, strategy="stratified", label_key="label",
                                             seed=CALIBRATION_SEED))
        contract = ModelContract(inputs={"image": {"features": PIXEL_KEYS, "shape": [8, 8, 1]}}, num_classes=10)
        models = {}
        for i, (label, cfg) in enumerate(configs.items()):
            models[label] = str(tmp / f"model{i}" / "float")
            if not Path(models[label]).is_dir():
                log.info("11. training %s", label)
                training.train(splits["train"], splits["eval"], models[label], "", str(tmp / f"model{i}" / "logs"),
                               cfg, contract)
        shutil.rmtree(tmp / "section", ignore_errors=True)
        lines = section(tmp / "section", models, data.split_files(f"{tmp / 'cal'}/Split-calibration"),
                        data.split_files(splits["validation"]), data.split_files(splits["eval"]), splits["train"])
        path = REPO / "BENCHMARKS.md"
        path.write_text(replace_section(path.read_text(), TITLE, lines))
        log.info("wrote %s into %s", TITLE, path)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
