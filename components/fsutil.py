"""Files appear complete or not at all: stage in a hidden sibling folder, then rename."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def staged_dir(final: str | Path) -> Iterator[Path]:
    """Yields an empty hidden folder beside `final`; on success its entries are moved into
    `final` (created if needed; it must hold nothing they would overwrite). On error the
    staging folder is removed and `final` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield staging
        if not final.exists():
            os.rename(staging, final)
            return
        clashes = [p.name for p in staging.iterdir() if (final / p.name).exists()]
        if clashes:
            raise FileExistsError(f"{final} already holds {clashes}: refusing to overwrite")
        for entry in sorted(staging.iterdir()):
            os.rename(entry, final / entry.name)
        staging.rmdir()
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_json_atomic(path: str | Path, obj) -> None:
    """Writes JSON to a temp file in the same folder, fsyncs, and renames it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
