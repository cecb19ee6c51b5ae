"""Logging for pipeline runs: our stages' progress at INFO, TFX's component start/finish
lines, warnings and errors; not TensorFlow's, Beam's or TFX's verbose INFO chatter.
QP_VERBOSE=1 shows everything."""
from __future__ import annotations

import logging
import os
import re
import warnings

from tfx_quantization.contracts import VERBOSE_VAR

_TFX_PROGRESS = re.compile(r"^Component \S+ is (running|finished)|^Running pipeline|^Pipeline run")
# TFX's input resolution complains about a query option it does not use, on every stage.
_HARMLESS = re.compile(r"^ArtifactQuery.property_predicate is not supported")


class _OnlyProgress(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _HARMLESS.search(message):
            return False
        return record.levelno >= logging.WARNING or bool(_TFX_PROGRESS.search(message))


def configure(verbose: bool | None = None) -> None:
    if verbose is None:
        verbose = os.environ.get(VERBOSE_VAR, "") not in ("", "0", "false")
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.INFO)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    if verbose:
        return
    # Beam's worker processes inherit these: no Python deprecation chatter, no TF C++ logs.
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning,ignore::UserWarning")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    logging.getLogger("absl").addFilter(_OnlyProgress())
    for noisy in ("tensorflow", "apache_beam", "h5py", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
