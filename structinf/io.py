"""Files: atomic writers, checkpoints and the model registry.

Checkpoints are weights in safetensors plus a JSON config, loaded without
executing code.

A checkpoint is a folder holding ``weights.safetensors`` and ``config.json``
(the model's class and configuration, the vocabularies, the task, anything
extra). Writes are atomic: files are written into a temporary sibling folder
that then replaces the target in one rename, so an interrupted write never
leaves a half checkpoint, and an existing checkpoint is only replaced when the
caller asks for it (``overwrite=True``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple, Type

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["save_checkpoint", "load_checkpoint", "register_model", "write_json_atomic",
           "write_text_atomic", "CheckpointError"]

FORMAT = "structinf-checkpoint"
VERSION = 1
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"

# class name -> (config class with from_dict / to_dict, model class); filled by
# structinf.models on import, so this module never imports its own users.
_REGISTRY: Dict[str, Tuple[Any, Type[nn.Module]]] = {}


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, incomplete or not ours."""


def register_model(config_cls, model_cls: Type[nn.Module]) -> None:
    """Makes ``model_cls(config_cls.from_dict(...))`` loadable by name."""
    _REGISTRY[model_cls.__name__] = (config_cls, model_cls)


def write_text_atomic(path: os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary sibling file and one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: os.PathLike, data: Any) -> None:
    """Writes JSON to ``path`` through a temporary file and one rename."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_checkpoint(path: os.PathLike, model: nn.Module, *, extra: Dict[str, Any] | None = None,
                    overwrite: bool = False) -> Path:
    """Saves ``model`` (its ``config`` and weights) and ``extra`` JSON-able data.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"save_checkpoint: {path} exists; pass overwrite=True to replace it")
    name = type(model).__name__
    if not hasattr(model, "config") or not hasattr(model.config, "to_dict"):
        raise TypeError(f"save_checkpoint: {name} has no .config with to_dict()")
    meta = {"format": FORMAT, "version": VERSION, "class": name,
            "config": model.config.to_dict(), "extra": extra or {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS))
        with open(tmp / CONFIG, "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.write("\n")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "ckpt")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_checkpoint_meta(path: os.PathLike) -> Dict[str, Any]:
    """The JSON half of a checkpoint."""
    path = Path(path)
    cfg = path / CONFIG
    if not cfg.is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} is not a structinf checkpoint (expected {CONFIG} and {WEIGHTS})")
    with open(cfg) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg} is not a structinf checkpoint config")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{cfg} has version {meta.get('version')}, this structinf reads {VERSION}")
    return meta


def load_checkpoint(path: os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuilds the model from its config and loads its weights (no pickle, no code).

    Returns:
        (model in eval mode, the ``extra`` dict saved with it).
    """
    meta = read_checkpoint_meta(path)
    name = meta["class"]
    if name not in _REGISTRY:
        raise CheckpointError(f"{path}: unknown model class {name!r} (known: {sorted(_REGISTRY)})")
    config_cls, model_cls = _REGISTRY[name]
    model = model_cls(config_cls.from_dict(meta["config"]))
    state = load_file(str(Path(path) / WEIGHTS), device=str(map_location))
    model.load_state_dict(state)
    model.to(map_location)
    model.eval()
    return model, meta["extra"]
