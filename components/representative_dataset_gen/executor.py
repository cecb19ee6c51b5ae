"""Thin Beam executor: resolves the split, runs the sampling transforms, records stats."""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils

from components.representative_dataset_gen import sampling
from components.tfx_utils import set_properties, single

log = logging.getLogger(__name__)


class Executor(base_beam_executor.BaseBeamExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        examples = single(input_dict, "examples")
        output = single(output_dict, "representative_dataset")
        split = exec_properties.get("split") or "train"
        strategy = exec_properties.get("strategy") or sampling.UNIFORM
        label_key = exec_properties.get("label_key") or None
        num_samples, seed = int(exec_properties["num_samples"]), int(exec_properties.get("seed") or 0)
        sampling.check_params(num_samples, strategy, label_key)

        splits = artifact_utils.decode_split_names(examples.split_names)
        if split not in splits:
            raise ValueError(f"split {split!r} is not in the examples (they have {splits}): set `split` to one of them")
        pattern = sampling.precheck_split(artifact_utils.get_split_uri([examples], split), label_key, strategy)
        log.info("Sampling %d examples from split %r (%s, seed %d)", num_samples, split, strategy, seed)
        with self._make_beam_pipeline() as pipeline:
            sampling.build_sampling(pipeline, pattern, output.uri, num_samples, strategy, label_key, seed)
        stats = sampling.read_stats(output.uri)

        output.split_names = artifact_utils.encode_split_names([sampling.CALIBRATION_SPLIT])
        output.span = examples.span
        set_properties(output, {
            "num_samples": stats["num_samples_taken"],
            "num_samples_requested": num_samples,
            "strategy": strategy,
            "seed": seed,
            "source_split": split,
            "num_dropped_non_finite": stats["num_dropped_non_finite"],
            "per_class_counts": stats["per_class_samples"] or None,
        })
        log.info("Calibration sample: %d examples, per class %s", stats["num_samples_taken"], stats["per_class_samples"])
