"""Cheap checks of what a run will read and write, before any stage runs.

The settings are validated when the configuration is built (pipeline/config.py); these
checks look at the world: the input files exist, their header (CSV) or first record
(TFRecord) has the feature and label keys, the user module exists, the push destination
can be written. Reading every example is the trainer's job (its first step); here one
header or one record per run is read, so a typo fails in seconds instead of minutes.
"""
from __future__ import annotations

import difflib
import io
import os
import re
from typing import List

from tfx_quantization import fsutil, signing
from tfx_quantization.pipeline.config import PipelineConfig


class PreflightError(ValueError):
    """What is wrong with the run's inputs or outputs, and the setting to fix."""


def input_files(config: PipelineConfig) -> List[str]:
    """The files ExampleGen will read (every span, for a span pattern)."""
    pattern = config.input_pattern.replace("{SPAN}", "*").replace("{VERSION}", "*")
    if not fsutil.isdir(config.data_root):
        raise PreflightError(f"data_root {config.data_root} does not exist: set data_root (QP_DATA_ROOT, or in the QP_CONFIG file) "
                             "to the input folder")
    files = [f for f in fsutil.gfile(config.data_root).glob(fsutil.join(config.data_root, pattern))
             if not fsutil.isdir(f)]
    if not files:
        raise PreflightError(
            f"no file under data_root {config.data_root} matches input_pattern {config.input_pattern!r}: "
            f"it holds {fsutil.listdir(config.data_root)[:8]}; fix input_pattern or data_root (QP_INPUT_PATTERN, QP_DATA_ROOT, "
            "or in the QP_CONFIG file)")
    return sorted(files)


BOM = "\ufeff"
# Removes a UTF-8 byte-order mark from a file's first line, in place (GNU sed).
STRIP_BOM = "sed -i '1s/^\\xEF\\xBB\\xBF//' {path}"


def _columns(path: str, data_format: str) -> List[str]:
    if data_format == "csv":
        with fsutil.gfile(path).GFile(path, "rb") as f:
            raw = f.readline()
        try:
            header = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise PreflightError(
                f"{path} is not UTF-8 text (byte {e.start} of its header line: {raw[e.start:e.start + 1]!r}): "
                "CsvExampleGen reads UTF-8 CSV; re-save it as UTF-8, e.g. iconv -f LATIN1 -t UTF-8") from None
        if not header:
            raise PreflightError(f"{path} is empty: a CSV input needs a header line and rows")
        import csv

        return next(csv.reader(io.StringIO(header)))
    from tfx_quantization.quantization import data

    first = next(data.iter_serialized([path]), None)
    if first is None:
        raise PreflightError(f"{path} holds no records")
    import tensorflow as tf

    return sorted(tf.train.Example.FromString(first).features.feature)


def _unpadded(name: str) -> str:
    return re.sub(r"\d+", lambda m: str(int(m.group())), name)


def _closest(name: str, have: List[str]) -> List[str]:
    """[the column `name` most likely means] or []: one that differs only in a number's zero
    padding ('pixel_05' for 'pixel_5', which difflib ranks below 'pixel_59') first."""
    return [h for h in have if _unpadded(h) == _unpadded(name)][:1] or difflib.get_close_matches(name, have, n=1)


def _missing(wanted: List[str], have: List[str], what: str, var: str, path: str) -> None:
    missing = [k for k in wanted if k not in have]
    if not missing:
        return
    hints = {k: _closest(k, have) for k in missing[:3]}
    hint = "; ".join(f"{k!r}: did you mean {m[0]!r}?" for k, m in hints.items() if m)
    raise PreflightError(
        f"{what} {missing[:8]} {'is' if len(missing) == 1 else 'are'} not in {path} (it has {have[:8]}"
        f"{' ...' if len(have) > 8 else ''}){': ' + hint if hint else ''}; fix {var}")


def _check_writable(destination: str) -> None:
    if fsutil.is_remote(destination):
        return  # object stores: credentials decide, and the first write says so
    probe = os.path.abspath(destination)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise PreflightError(
            f"push destination {destination} cannot be written ({probe} is not a writable folder): set "
            "QP_PUSH__DESTINATION to a folder this user can write")


def _byte_order_mark(path: str, columns: List[str], wanted: List[str]) -> None:
    """CsvExampleGen keeps a UTF-8 byte-order mark in the first column's name (tried: TFX
    1.16 writes the feature '\\ufeffpixel_00'), so a BOM on a column the run needs is named
    here with the one-line fix, instead of as a missing key."""
    if columns and columns[0].startswith(BOM) and columns[0][len(BOM):] in wanted:
        raise PreflightError(
            f"{path} starts with a UTF-8 byte-order mark (BOM), which CsvExampleGen keeps in the first column's name "
            f"({columns[0]!r}, not {columns[0][len(BOM):]!r}): re-save it as UTF-8 without BOM, e.g. "
            f"{STRIP_BOM.format(path=path)}")


def _has_rows(path: str) -> bool:
    """Whether a CSV file holds a non-blank line after its header."""
    with fsutil.gfile(path).GFile(path, "rb") as f:
        f.readline()
        return any(line.strip() for line in iter(f.readline, b""))


def check(config: PipelineConfig) -> None:
    files = input_files(config)
    columns = _columns(files[0], config.data_format)
    if config.data_format == "csv" and not any(_has_rows(f) for f in files):
        which = files[0] if len(files) == 1 else f"each of the {len(files)} input files under {config.data_root}"
        raise PreflightError(f"{which} holds a header line and no rows: ExampleGen would write empty splits; "
                             "add the examples")
    where = files[0]
    keys = [k for name, i in config.contract.inputs.items() for k in (i.features or [name])]
    label = [config.contract.label_key] if config.contract.has_labels else []  # task none reads no label
    if config.data_format == "csv":
        _byte_order_mark(where, columns, label + ([] if config.tfx_module_file else keys))
    _missing(label, columns, "label key", "contract.label_key (QP_CONTRACT__LABEL_KEY, or in the QP_CONFIG file)", where)
    if not config.tfx_module_file:  # with a TFX module, Transform decides what the model sees
        _missing(keys, columns, "feature key(s)", "contract.inputs (QP_CONTRACT__INPUTS, or in the QP_CONFIG file)", where)
    module = config.train.module_file
    if module and (not fsutil.exists(module) or fsutil.isdir(module)):
        raise PreflightError(f"module_file {module} does not exist: set QP_MODULE_FILE to a Python file "
                             "that defines build_model()")
    tfx_module = config.tfx_module_file
    if tfx_module and (not fsutil.exists(tfx_module) or fsutil.isdir(tfx_module)):
        raise PreflightError(f"tfx_module_file {tfx_module} does not exist: set QP_TFX_MODULE_FILE to a Python file "
                             "that defines preprocessing_fn and run_fn")
    _check_writable(config.push.destination)
    try:  # a key that cannot be read fails now, not after training
        if config.push.signing_key:
            signing.load_signer(config.push.signing_key)
        if config.push.public_key:
            signing.load_public_key(config.push.public_key)
    except signing.SigningError as e:
        raise PreflightError(f"{e}; fix QP_PUSH__SIGNING_KEY / QP_PUSH__PUBLIC_KEY") from None
