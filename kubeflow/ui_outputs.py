"""Outputs the KFP UI renders: the evaluator's HTML report as a `system.HTML` artifact and the
gate's scalar figures as a `system.Metrics` artifact.

TFX's V2 compiler types every output `tfx.*` (the UI shows them as plain artifacts) and its
container entry point imports each output's class from its schema title, so it cannot take a
`system.*` output. Hence the two halves, both here:
- compile time (`declare`): the step's component gets the extra output definitions, and its
  container gets `--ui_outputs <json>` saying where each comes from;
- in the pod (`split_args`, `fill`, called by kubeflow/entrypoint.py): the flag and the
  `system.*` outputs are taken out of the ExecutorInput before TFX's entry point runs the
  executor; afterwards the report file is copied to its artifact's URI, the source
  artifact's numeric properties become the Metrics artifact's metadata (what the UI's
  scalar metrics view shows), and both are added to the ExecutorOutput file.
The executor itself knows nothing of this.
"""
from __future__ import annotations

import json
from typing import Dict, List, Tuple

from tfx_quantization import contracts, fsutil

FLAG = "--ui_outputs"
HTML, METRICS = "system.HTML", "system.Metrics"
INVOCATION_FLAG = "--json_serialized_invocation_args"
# step (component id) -> {output name: (schema title, the TFX output it comes from, the file
# in it; '' for the source's numeric properties)}
UI_OUTPUTS: Dict[str, Dict[str, Tuple[str, str, str]]] = {
    "TFLiteEvaluator": {
        "report_html": (HTML, "evaluation", contracts.REPORT_FILE),
        "gate_metrics": (METRICS, "evaluation", ""),
    },
}


def declare(spec: dict) -> None:
    """Adds the UI outputs to their steps' components and containers (PipelineSpec dict)."""
    tasks = spec["root"]["dag"]["tasks"]
    for step, outputs in UI_OUTPUTS.items():
        if step not in tasks:
            continue
        component = spec["components"][tasks[step]["componentRef"]["name"]]
        defs = component.setdefault("outputDefinitions", {}).setdefault("artifacts", {})
        for name, (title, source, _) in outputs.items():
            assert source in defs and name not in defs, (step, name, source)
            defs[name] = {"artifactType": {"schemaTitle": title, "schemaVersion": "0.0.1"}}
        container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        container["args"] += [FLAG, json.dumps(outputs, sort_keys=True)]


def split_args(argv: List[str]) -> Tuple[List[str], Dict[str, list], Dict[str, dict]]:
    """(the arguments TFX's entry point takes, the UI outputs asked for, their runtime
    artifacts taken out of the ExecutorInput)."""
    if FLAG not in argv:
        return list(argv), {}, {}
    i = argv.index(FLAG)
    wanted = json.loads(argv[i + 1])
    argv = argv[:i] + argv[i + 2:]
    j = argv.index(INVOCATION_FLAG) + 1
    executor_input = json.loads(argv[j])
    outputs = executor_input.get("outputs", {}).get("artifacts", {})
    taken = {name: outputs.pop(name) for name in wanted if name in outputs}
    argv[j] = json.dumps(executor_input)
    return argv, wanted, taken


def fill(argv: List[str], wanted: Dict[str, list], taken: Dict[str, dict]) -> None:
    """After the executor: writes each UI output from its source and records it in the
    ExecutorOutput file the launcher reads."""
    executor_input = json.loads(argv[argv.index(INVOCATION_FLAG) + 1])
    output_file = executor_input["outputs"]["outputFile"]
    result = fsutil.read_json(output_file)
    given = executor_input["outputs"]["artifacts"]
    for name, (title, source, filename) in wanted.items():
        if name not in taken:
            continue
        artifact = dict(taken[name]["artifacts"][0])
        source_uri = given[source]["artifacts"][0]["uri"]
        if title == HTML:
            fsutil.write_bytes_atomic(artifact["uri"], fsutil.read_bytes(fsutil.join(source_uri, filename)))
        else:
            produced = result.get("artifacts", {}).get(source, {}).get("artifacts", [{}])[0].get("metadata", {})
            figures = {k: v for k, v in produced.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            artifact["metadata"] = figures
            fsutil.write_json_atomic(artifact["uri"], figures)
        artifact.pop("type", None)
        result.setdefault("artifacts", {})[name] = {"artifacts": [artifact]}
    fsutil.write_bytes_atomic(output_file, json.dumps(result).encode())
