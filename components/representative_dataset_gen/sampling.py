"""Seeded, reproducible sampling of calibration examples with Apache Beam.

Every record is first put in canonical form (the tf.Example re-serialized deterministically:
features sorted by name), so that an ExampleGen that writes the same example with its
features in another order yields the same key and the same bytes. Every record gets the key
sha256(seed || canonical record); the sample is the `num_samples` records
with the smallest keys (globally, or per class for `stratified`, with per-class quotas
proportional to class frequency). Beam's Top combiners keep at most `num_samples` records
per key on any worker, so memory does not grow with the split, and the result does not
depend on the runner or the number of workers. The chosen records are written sorted by
key into one gzipped TFRecord file, so the same input and seed give the same bytes.
"""
from __future__ import annotations

import bisect
import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from tfx_quantization import contracts, fsutil
from tfx_quantization.quantization import data
from tfx_quantization.quantization.beam_records import ReadRecords
from tfx_quantization.settings import STRATIFIED, UNIFORM, CalibrationSettings

log = logging.getLogger(__name__)
MAX_SHOWN = 8


def sample_key(seed: int, record: bytes) -> int:
    """The first 8 bytes of sha256(seed || record), as an integer."""
    return int(fsutil.sha256_bytes(seed.to_bytes(8, "big", signed=True) + record)[:16], 16)


def stratified_quotas(class_counts: Dict[int, int], num_samples: int) -> Dict[int, int]:
    """Per-class sample sizes proportional to class frequency, summing to num_samples.

    Largest remainder rounding; every class present gets at least one sample while
    num_samples >= number of classes; no class gets more than it has.
    """
    total = sum(class_counts.values())
    if num_samples >= total:
        return dict(class_counts)
    labels = sorted(class_counts)
    shares = {c: num_samples * class_counts[c] / total for c in labels}
    quotas = {c: math.floor(shares[c]) for c in labels}
    if num_samples >= len(labels):
        for c in labels:
            quotas[c] = max(quotas[c], 1)
    # Hand out what is left by largest remainder (ties: smaller label first), or take back
    # the excess created by the minimum of one from the classes furthest above their share.
    while sum(quotas.values()) < num_samples:
        c = max((c for c in labels if quotas[c] < class_counts[c]), key=lambda c: (shares[c] - quotas[c], -c))
        quotas[c] += 1
    while sum(quotas.values()) > num_samples:
        c = max((c for c in labels if quotas[c] > 1), key=lambda c: (quotas[c] - shares[c], -c))
        quotas[c] -= 1
    return quotas


def canonical(example: tf.train.Example) -> bytes:
    """The example's bytes with its features in name order (protobuf's deterministic
    serialization sorts map keys): equal examples, equal bytes, whatever the writer's order."""
    return example.SerializeToString(deterministic=True)


def label_value(feats, label_key: str, real: bool):
    """One example's label: its one int64 class, or (`real`: a regression target) its one
    int or float value as a float; a ValueError when it has no such label."""
    feat = feats[label_key] if label_key in feats else None
    kind = feat.WhichOneof("kind") if feat is not None else None
    values = getattr(feat, kind).value if kind else []
    if len(values) != 1 or kind not in (("int64_list", "float_list") if real else ("int64_list",)):
        raise ValueError(f"an example has no single {'number' if real else 'int64 label'} in {label_key!r}; "
                         "stratified sampling needs one")
    return float(values[0]) if real else int(values[0])


def quantile_bin(value: float, edges: Sequence[float]) -> int:
    """The stratum of a real label: the index of the bin between consecutive quantile
    `edges` ([min, q1, ..., max], as beam.ApproximateQuantiles gives them) holding it."""
    return bisect.bisect_right(list(edges[1:-1]), value)


class _Inspect(beam.DoFn):
    """Keys each record; routes records with NaN/infinite float values to 'dropped'."""

    def __init__(self, seed: int, label_key: Optional[str], real: bool = False):
        self._seed, self._label_key, self._real = seed, label_key, real

    def process(self, record: bytes):
        example = tf.train.Example.FromString(record)
        record = canonical(example)
        feats = example.features.feature
        for name, feat in feats.items():
            if feat.WhichOneof("kind") == "float_list" and not all(math.isfinite(v) for v in feat.float_list.value):
                yield beam.pvalue.TaggedOutput("dropped", name)
                return
        label = label_value(feats, self._label_key, self._real) if self._label_key else -1
        yield label, (sample_key(self._seed, record), record)


def _write(chosen: List[Tuple[int, bytes]], out_dir: str, class_counts, dropped: int, params: dict,
           edges: Optional[Sequence[float]] = None) -> None:
    chosen = sorted(chosen)
    split_dir = fsutil.join(out_dir, f"Split-{contracts.CALIBRATION_SPLIT}")
    fsutil.makedirs(split_dir)
    final = fsutil.join(split_dir, contracts.CALIBRATION_FILE)
    tmp = final + ".tmp"
    with tf.io.TFRecordWriter(tmp, options="GZIP") as writer:
        for _, record in chosen:
            writer.write(record)
    fsutil.gfile(final).rename(tmp, final, overwrite=True)
    per_class: Dict[int, int] = {}
    if params["label_key"]:
        for _, record in chosen:
            label = label_value(tf.train.Example.FromString(record).features.feature, params["label_key"],
                                edges is not None)
            label = quantile_bin(label, edges) if edges is not None else label
            per_class[int(label)] = per_class.get(int(label), 0) + 1
    stats = dict(
        params,
        num_samples_taken=len(chosen),
        num_examples_in_split=int(sum(class_counts.values())),
        num_dropped_non_finite=int(dropped),
        class_counts_in_split={str(k): int(v) for k, v in sorted(class_counts.items())} if params["label_key"] else {},
        per_class_samples={str(k): v for k, v in sorted(per_class.items())},
    )
    if edges is not None:  # a real label's strata: bins between these quantiles
        stats["quantile_edges"] = [float(e) for e in edges]
    fsutil.write_json_atomic(fsutil.join(out_dir, contracts.SAMPLING_STATS_FILE), stats)


def build_sampling(pipeline: beam.Pipeline, files_pattern: str, out_dir: str, settings: CalibrationSettings,
                   real_label: Optional[bool] = None) -> None:
    """Adds the sampling transforms to `pipeline`; the result appears in out_dir on run.
    settings.strategy None: stratified when settings.label_key is set, else uniform.
    Stratified on a real-valued label (`real_label`, e.g. a regression target; None: when
    the first record's label is a float), the strata are settings.quantile_bins bins between
    the label's approximate quantiles (beam.ApproximateQuantiles, a bounded-memory sketch),
    each sampled in proportion to its count as classes are."""
    settings = settings.resolved()
    num_samples, strategy, seed = settings.num_samples, settings.strategy, settings.seed or 0
    label_key = settings.label_key if strategy == STRATIFIED else None
    if label_key and real_label is None:
        real_label = first_label_is_float(files_pattern, label_key)
    real_label = bool(label_key and real_label)
    params = dict(num_samples_requested=num_samples, strategy=strategy, seed=seed, label_key=label_key or "")
    inspected = (
        pipeline
        # In fixed memory: Beam's ReadFromTFRecord holds a gzipped shard whole (beam_records).
        | "Read" >> ReadRecords(files_pattern)
        | "Inspect" >> beam.ParDo(_Inspect(seed, label_key, real_label)).with_outputs("dropped", main="kept")
    )
    kept, dropped = inspected.kept, inspected.dropped
    strata = {}
    if real_label:
        edges = (kept | "Targets" >> beam.Keys()
                 | "Quantiles" >> beam.ApproximateQuantiles.Globally(settings.quantile_bins + 1))
        strata = {"edges": beam.pvalue.AsSingleton(edges)}
        kept = kept | "Bin" >> beam.Map(lambda kv, edges: (quantile_bin(kv[0], edges), kv[1]), **strata)
    class_counts = (
        kept
        | "Labels" >> beam.Keys()
        | "CountPerClass" >> beam.combiners.Count.PerElement()
        | "ClassCounts" >> beam.combiners.ToDict()
    )
    dropped_count = dropped | "CountDropped" >> beam.combiners.Count.Globally()
    if strategy == UNIFORM:
        chosen = kept | "Values" >> beam.Values() | "Smallest" >> beam.combiners.Top.Smallest(num_samples)
    else:
        chosen = (
            kept
            | "SmallestPerClass" >> beam.combiners.Top.SmallestPerKey(num_samples)
            | "ApplyQuotas" >> beam.Map(
                lambda kv, counts: kv[1][: stratified_quotas(counts, num_samples)[kv[0]]],
                counts=beam.pvalue.AsSingleton(class_counts))
            | "Flatten" >> beam.FlatMap(lambda items: items)
            | "Gather" >> beam.combiners.ToList()
        )
    _ = chosen | "Write" >> beam.Map(
        _write, out_dir=out_dir, class_counts=beam.pvalue.AsSingleton(class_counts),
        dropped=beam.pvalue.AsSingleton(dropped_count), params=params, **strata,
    )


def first_label_is_float(files_pattern: str, label_key: str) -> bool:
    """Whether the first record matching `files_pattern` stores `label_key` as floats."""
    first = next(data.iter_serialized(sorted(tf.io.gfile.glob(files_pattern))[:1]), None)
    feats = tf.train.Example.FromString(first).features.feature if first else {}
    return label_key in feats and feats[label_key].WhichOneof("kind") == "float_list"


def precheck_split(split_dir: str, settings: CalibrationSettings) -> str:
    """Fails early, with the fix, on a missing or empty split or a missing label key."""
    settings = settings.resolved()
    files = data.split_files(split_dir)
    first = next(data.iter_serialized(files), None)
    if first is None:
        raise ValueError(f"the split in {split_dir} is empty: there is nothing to sample")
    if settings.strategy == STRATIFIED:
        feats = tf.train.Example.FromString(first).features.feature
        if settings.label_key not in feats:
            raise ValueError(
                f"label_key {settings.label_key!r} is not a feature of the examples ({sorted(feats)[:8]} ...): "
                "name the label feature, or use strategy='uniform'"
            )
    return fsutil.join(split_dir, "*")


# A sample under this share of num_samples is a warning in the run's summary and report: the
# converter sets each tensor's int8 range from the min/max the sample reaches, and a sample
# that small was not what the job planned its ranges on (1000 asked, 40 taken: the split is
# the wrong one, or far smaller than the job assumed). Above it, a short split is a log line only.
SHORT_SAMPLE_SHARE = 0.5


def sample_warnings(stats: dict) -> List[str]:
    """What the run should hear about the sample in `stats` (sampling_stats.json): far fewer
    examples than num_samples (below SHORT_SAMPLE_SHARE of it), and, stratified, classes of
    the split that have no example in it. Each one line with the fix."""
    warnings = []
    requested, taken, usable = stats["num_samples_requested"], stats["num_samples_taken"], stats["num_examples_in_split"]
    if taken < SHORT_SAMPLE_SHARE * requested:
        dropped = stats["num_dropped_non_finite"]
        warnings.append(
            f"the calibration sample holds {taken} example(s), far below num_samples={requested} (the split has "
            f"{usable} usable example(s){f', {dropped} more dropped for NaN or infinite values' if dropped else ''}): "
            "the int8 ranges rest on these few; sample a larger split (source_split) or lower num_samples")
    if stats["label_key"]:
        sampled = stats["per_class_samples"]
        missing = sorted((c for c in stats["class_counts_in_split"] if not sampled.get(c)), key=int)
        if missing:
            warnings.append(
                f"class(es) {', '.join(missing[:MAX_SHOWN])}{' ...' if len(missing) > MAX_SHOWN else ''} of "
                f"{stats['label_key']!r} have no example in the stratified calibration sample ({len(missing)} of "
                f"{len(stats['class_counts_in_split'])} classes; num_samples={requested}): the int8 ranges never saw "
                "them; raise num_samples to at least the number of classes")
    return warnings


def read_stats(out_dir: str) -> dict:
    """The sampling statistics, with their `warnings` (sample_warnings), which are logged and
    recorded in `out_dir` (contracts.CALIBRATION_WARNINGS_FILE) for the quantizer to carry
    into the run's warnings. Fails if every example was dropped."""
    stats = fsutil.read_json(fsutil.join(out_dir, contracts.SAMPLING_STATS_FILE))
    if stats["num_samples_taken"] == 0:
        raise ValueError(
            f"no example is left to sample: {stats['num_dropped_non_finite']} example(s) were dropped "
            "for NaN or infinite feature values and none remain"
        )
    stats["warnings"] = sample_warnings(stats)
    for warning in stats["warnings"]:
        log.warning("%s", warning)
    contracts.write_warnings(out_dir, contracts.CALIBRATION_WARNINGS_FILE, stats["warnings"])
    if stats["num_samples_requested"] > stats["num_examples_in_split"] and not stats["warnings"]:
        log.warning(
            "num_samples=%d is larger than the split (%d usable examples): took all %d",
            stats["num_samples_requested"], stats["num_examples_in_split"], stats["num_samples_taken"],
        )
    if stats["num_dropped_non_finite"]:
        log.warning("dropped %d example(s) with NaN or infinite feature values", stats["num_dropped_non_finite"])
    return stats


def run_sampling(
    split_dir: str,
    out_dir: str,
    settings: CalibrationSettings,
    beam_pipeline_args: Optional[Sequence[str]] = None,
) -> dict:
    """Samples `split_dir` into `out_dir` on a Beam pipeline of its own; returns the stats."""
    settings = settings.resolved()
    pattern = precheck_split(split_dir, settings)
    with beam.Pipeline(options=PipelineOptions(list(beam_pipeline_args or []))) as p:
        build_sampling(p, pattern, out_dir, settings)
    return read_stats(out_dir)
