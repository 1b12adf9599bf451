"""Compact checkpoints a results folder keeps (and commits) so that the study
resumes from them on any machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Sequence

from ..io import load_checkpoint, make_folder_atomic, write_bytes_atomic

__all__ = ["COMMITTED", "COMMITTED_MAX_BYTES", "keep_checkpoints"]


#: Where a results folder keeps compact checkpoints of its longest trainings
#: (weights and vocabularies only; see :func:`keep_checkpoints`), committed so
#: that the study resumes from them on any machine.
COMMITTED = "checkpoints"

#: The most a committed checkpoint may take.
COMMITTED_MAX_BYTES = 10 * 2**20


def keep_checkpoints(results: Path, runs: Path, names: Sequence[str]) -> List[Path]:
    """Copies the checkpoints ``runs/<name>`` to ``results/checkpoints/<name>``
    without their training state (the best weights, the config with the
    vocabularies and the history), each under :data:`COMMITTED_MAX_BYTES`.

    Raises:
        FileNotFoundError: a checkpoint is missing.
        FileExistsError: a kept checkpoint of that name is there already.
        ValueError: one would take more than the limit.
    """
    out = []
    for name in names:
        src, dst = Path(runs) / name, Path(results) / COMMITTED / name
        files = [src / "config.json", src / "weights.safetensors"]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"keep_checkpoints: {missing[0]} does not exist")
        size = sum(f.stat().st_size for f in files)
        if size > COMMITTED_MAX_BYTES:
            raise ValueError(f"keep_checkpoints: {src} takes {size / 2**20:.1f} MB, more than "
                             f"{COMMITTED_MAX_BYTES / 2**20:.0f} MB")
        if os.path.lexists(dst):
            raise FileExistsError(f"keep_checkpoints: {dst} exists")

        def fill(tmp: Path, files=files) -> None:
            for f in files:
                write_bytes_atomic(tmp / f.name, f.read_bytes())

        if not make_folder_atomic(dst, fill):
            raise FileExistsError(f"keep_checkpoints: {dst} exists (kept by another process "
                                  "meanwhile)")
        load_checkpoint(dst)  # the copy loads (checksums included)
        out.append(dst)
    return out
