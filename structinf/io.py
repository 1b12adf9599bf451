"""Files: atomic writers, checkpoints and the model registry.

Atomic writers. :func:`write_bytes_atomic` (and the text, JSON and gzipped JSON
writers built on it) writes a temporary sibling file, flushes it to disk and
renames it over the target, so a reader sees the old content or the new one,
never a part. Files get the mode the user's umask gives (``0666 & ~umask``),
folders ``0777 & ~umask``, as ``open`` and ``mkdir`` would.

Checkpoints. A checkpoint is a folder holding ``weights.safetensors`` and
``config.json`` (the model's class and configuration, the vocabularies, the
task, anything extra, and the size and sha256 of the weights file, checked on
load), optionally ``training_state.safetensors`` + ``training_state.json``
(what resuming a training needs: the last epoch's weights, the optimizer's
state, the random generators) and ``results.json`` (written by ``structinf
train-crf``). Nothing in it is loaded with pickle.

Saving writes a new folder beside the target and swaps it in: with
``renameat2(RENAME_EXCHANGE)`` where the system has it (Linux, most local file
systems), so the path holds a complete checkpoint at every moment; elsewhere
with two renames (old folder to ``.<name>.previous-*``, new folder to the path),
and a load that falls in the gap between them names the previous checkpoint.
An existing folder is only replaced when the caller asks (``overwrite=True``)
and only when it is a checkpoint holding nothing but the files above: a folder
with anything else in it is never deleted. ``results.json``, which a save does
not write, is carried over into the new folder (unchanged while the weights
are, marked ``"stale": true`` once they change), so an interrupted resumed
training never loses it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gzip
import hashlib
import json
import os
import secrets
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple, Type

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint_meta", "load_training_state",
           "check_replaceable", "previous_checkpoint", "register_model", "write_bytes_atomic",
           "write_text_atomic", "write_json_atomic", "write_json_gz_atomic", "make_folder_atomic",
           "CheckpointError"]

FORMAT = "structinf-checkpoint"
VERSION = 1
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
RESULTS = "results.json"
TRAINING_STATE = "training_state.safetensors"
TRAINING_META = "training_state.json"
#: Every file a checkpoint folder may hold; ``overwrite`` replaces only such folders.
OWN_FILES = (CONFIG, WEIGHTS, RESULTS, TRAINING_META, TRAINING_STATE)
#: Files a save does not write and carries over from the folder it replaces.
CARRIED_OVER = (RESULTS,)

# A check of a loaded model's config against the checkpoint's extra data (its
# vocabularies): (config, extra) -> None, or what is wrong.
SavedCheck = Callable[[Any, Dict[str, Any]], Optional[str]]

# class name -> (config class with from_dict / to_dict, model class, check); filled
# by structinf.models on import, so this module never imports its own users.
_REGISTRY: Dict[str, Tuple[Any, Type[nn.Module], Optional[SavedCheck]]] = {}


class CheckpointError(ValueError):
    """A checkpoint folder that is missing, damaged, inconsistent or not ours.

    The message is one line naming the file and what is wrong with it."""


def register_model(config_cls, model_cls: Type[nn.Module], check: Optional[SavedCheck] = None
                   ) -> None:
    """Makes ``model_cls(config_cls.from_dict(...))`` loadable by name; ``check``
    (optional) compares the config with the saved extra data on load."""
    _REGISTRY[model_cls.__name__] = (config_cls, model_cls, check)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


# ------------------------------------------------------------------ atomic writes

def _fsync_dir(folder: Path) -> None:
    """Makes renames inside ``folder`` durable (where the system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_new(path: Path, data: bytes) -> None:
    """Creates ``path`` (which must not exist) with ``data``, flushed to disk. The
    mode is ``0666 & ~umask``: unlike ``mkstemp``, whose 0600 would leak through."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sibling(path: Path, tag: str) -> Path:
    """An unused hidden name beside ``path`` (nothing is created)."""
    while True:
        candidate = path.parent / f".{path.name}.{tag}-{secrets.token_hex(4)}"
        if not os.path.lexists(candidate):
            return candidate


def write_bytes_atomic(path: os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary sibling file and one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _sibling(path, "tmp")
        try:
            _write_new(tmp, data)
            break
        except FileExistsError:
            continue
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_text_atomic(path: os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: os.PathLike, data: Any) -> None:
    """Writes ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_json_gz_atomic(path: os.PathLike, data: Any) -> None:
    """Writes ``data`` as compact gzipped JSON to ``path`` atomically; the gzip
    header holds no time stamp, so the same data gives the same bytes."""
    write_bytes_atomic(path, gzip.compress(json.dumps(data).encode("utf-8"), mtime=0))


def make_folder_atomic(path: os.PathLike, fill: Callable[[Path], None]) -> bool:
    """Makes the new folder ``path`` with what ``fill(tmp)`` writes into an empty
    hidden folder beside it, then renames that into place: ``path`` never holds
    part of it, and a fill cut short (an error, Ctrl-C) leaves nothing behind.

    Returns:
        True when this call's folder landed; False when ``path`` appeared while it
        was filled (another process made it first) -- that folder is kept, and
        this call's copy dropped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _sibling(path, "tmp")
        try:
            os.mkdir(tmp)  # 0777 & ~umask, like any folder the user makes
            break
        except FileExistsError:
            continue
    try:
        fill(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if os.path.isdir(path) and os.listdir(path):
                return False
            raise
        _fsync_dir(path.parent)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------- folder swapping

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2 = None


def _load_renameat2():
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).renameat2
            except (OSError, AttributeError):  # glibc < 2.28, musl without it
                pass
            else:
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                               ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2 = fn
    return _renameat2


def _exchange(a: Path, b: Path) -> bool:
    """Swaps the folders ``a`` and ``b`` in one step; False where the system or the
    file system cannot (the caller then falls back to two renames)."""
    fn = _load_renameat2()
    if not fn:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Holds back Ctrl-C (SIGINT) for the few system calls of a swap, then delivers
    it, so that the two-rename fallback is never left half done by it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


def previous_checkpoint(path: os.PathLike) -> Optional[Path]:
    """The checkpoint an interrupted two-rename replacement of ``path`` moved aside
    (``.<name>.previous-*`` beside it), when ``path`` itself is missing."""
    path = Path(path)
    if os.path.lexists(path) or not path.parent.is_dir():
        return None
    found = sorted((p for p in path.parent.glob(f".{path.name}.previous-*")
                    if (p / CONFIG).is_file()), key=lambda p: p.stat().st_mtime_ns)
    return found[-1] if found else None


def check_replaceable(path: os.PathLike) -> None:
    """Raises :class:`CheckpointError` unless ``path`` is missing, an empty folder or
    a structinf checkpoint holding only a checkpoint's own files."""
    path = Path(path)
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        raise CheckpointError(f"{path} is not a folder; only a checkpoint folder is replaced")
    entries = sorted(os.listdir(path))
    foreign = [name + ("/" if (path / name).is_dir() else "") for name in entries
               if name not in OWN_FILES or (path / name).is_symlink()
               or not (path / name).is_file()]
    if foreign:
        shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more"
                                           if len(foreign) > 10 else "")
        raise CheckpointError(f"{path} holds {shown}: not part of a structinf checkpoint "
                              f"({', '.join(OWN_FILES)}); not replacing it: move those away or "
                              "choose another folder")
    if entries:
        try:
            meta = json.loads((path / CONFIG).read_bytes())
            ours = isinstance(meta, dict) and meta.get("format") == FORMAT
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise CheckpointError(f"{path} is not a structinf checkpoint (no valid {CONFIG}); "
                                  "not replacing it: move its files away or choose another "
                                  "folder")


def _weights_sha(folder: Path) -> Optional[str]:
    """The sha256 of a checkpoint's weights (recorded, else computed), None if unknown."""
    try:
        info = json.loads((folder / CONFIG).read_bytes()).get("weights") or {}
        if isinstance(info.get("sha256"), str):
            return info["sha256"]
        return hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    except (OSError, ValueError, AttributeError):
        return None


def _carry_over(old: Path, new: Path, sha: str) -> None:
    """Copies the files a save does not write from ``old`` into ``new``; results
    that describe other weights than ``sha`` are marked stale."""
    old_sha = None
    for name in CARRIED_OVER:
        src = old / name
        if (new / name).exists() or not src.is_file() or src.is_symlink():
            continue
        data = src.read_bytes()
        try:
            results = json.loads(data)
        except ValueError:
            results = None
        if isinstance(results, dict) and not results.get("stale"):
            of = results.get("weights_sha256")
            if of is None:
                old_sha = old_sha or _weights_sha(old)
                of = old_sha
            if of != sha:
                results["stale"] = True
                results["stale_reason"] = (
                    f"computed for weights with sha256 {str(of)[:16]}...; the checkpoint's "
                    f"weights were replaced afterwards (sha256 {sha[:16]}...), e.g. by a "
                    "resumed training that was interrupted; rerun the command that wrote "
                    "this file")
                data = (json.dumps(results, indent=2, sort_keys=True) + "\n").encode("utf-8")
        _write_new(new / name, data)


def _swap_in(new: Path, path: Path) -> None:
    """Puts the complete folder ``new`` at ``path``, replacing what is there."""
    if not os.path.lexists(path):
        os.rename(new, path)
        return
    if _exchange(new, path):
        shutil.rmtree(new, ignore_errors=True)  # it now holds the replaced checkpoint
        return
    backup = _sibling(path, "previous")
    os.rename(path, backup)
    try:
        os.rename(new, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(backup, path)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def save_checkpoint(path: os.PathLike, model: nn.Module, *, extra: Dict[str, Any] | None = None,
                    overwrite: bool = False, state: Optional[Dict[str, torch.Tensor]] = None,
                    training_state: Optional[Tuple[Dict[str, torch.Tensor], dict]] = None,
                    carry_over: bool = True) -> Path:
    """Saves ``model`` (its ``config`` and weights) and ``extra`` JSON-able data.

    Args:
        state: the weights to save (default: ``model.state_dict()``), e.g. the best
            epoch's while ``model`` holds the last one's.
        training_state: (tensors, JSON-able dict) saved as ``training_state.*``,
            read back by :func:`load_training_state`.
        carry_over: keep the replaced folder's ``results.json`` (see the module
            docstring); False drops it with the rest of the old checkpoint.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        CheckpointError: ``path`` exists but is not a checkpoint folder of ours
            (it is left as it is).
    """
    path = Path(path)
    replacing = os.path.lexists(path)
    if replacing and not overwrite:
        raise FileExistsError(f"save_checkpoint: {path} exists; pass overwrite=True to replace it")
    if replacing:
        check_replaceable(path)
    name = type(model).__name__
    if not hasattr(model, "config") or not hasattr(model.config, "to_dict"):
        raise TypeError(f"save_checkpoint: {name} has no .config with to_dict()")
    weights = model.state_dict() if state is None else state
    blob = save_safetensors({k: v.detach().contiguous().cpu() for k, v in weights.items()})
    sha = hashlib.sha256(blob).hexdigest()
    meta = {"format": FORMAT, "version": VERSION, "class": name,
            "config": model.config.to_dict(), "extra": extra or {},
            "weights": {"sha256": sha, "bytes": len(blob)}}
    files = {WEIGHTS: blob,
             CONFIG: (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode("utf-8")}
    if training_state is not None:
        tensors, info = training_state
        tblob = save_safetensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
        info = dict(info, sha256=hashlib.sha256(tblob).hexdigest(), bytes=len(tblob),
                    weights_sha256=sha)
        files[TRAINING_STATE] = tblob
        files[TRAINING_META] = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        # Ctrl-C held back while the folder is made and named: no interrupt can
        # leave a folder that the cleanup below does not know of.
        with _interrupts_deferred():
            while tmp is None:
                candidate = _sibling(path, "tmp")
                try:
                    os.mkdir(candidate, 0o777)  # 0777 & ~umask (mkdtemp's 0700 leaks)
                    tmp = candidate
                except FileExistsError:
                    continue
        for fname, data in files.items():
            _write_new(tmp / fname, data)
        if replacing and carry_over and path.is_dir():
            _carry_over(path, tmp, sha)
        _fsync_dir(tmp)
        with _interrupts_deferred():
            _swap_in(tmp, path)
            _fsync_dir(path.parent)
    finally:
        if tmp is not None and os.path.lexists(tmp):
            with _interrupts_deferred():
                shutil.rmtree(tmp, ignore_errors=True)
    return path


# ------------------------------------------------------------------------ loading

def read_checkpoint_meta(path: os.PathLike) -> Dict[str, Any]:
    """The JSON half of a checkpoint, its structure checked.

    Raises:
        CheckpointError: no checkpoint at ``path`` (naming the previous one where an
            interrupted replacement left it), or an unreadable ``config.json``.
    """
    path = Path(path)
    cfg = path / CONFIG
    if not os.path.lexists(path):
        previous = previous_checkpoint(path)
        if previous is not None:
            raise CheckpointError(
                f"{path} is not a structinf checkpoint: it does not exist, as a replacement "
                f"of it was interrupted; the previous checkpoint is at {previous} (move it "
                f"back to {path})")
        raise CheckpointError(f"{path} is not a structinf checkpoint: it does not exist")
    if not cfg.is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(f"{path} is not a structinf checkpoint (expected {CONFIG} and {WEIGHTS})")
    try:
        meta = json.loads(cfg.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"{cfg} cannot be read: {exc.strerror}") from exc
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{cfg} is not valid JSON ({_one_line(exc)}); the checkpoint "
                              "is damaged") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{cfg} is not a structinf checkpoint config")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{cfg} has version {meta.get('version')!r}, this structinf reads {VERSION}")
    for key, kind in (("class", str), ("config", dict), ("extra", dict)):
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{cfg}: {key!r} is missing or not a {kind.__name__}")
    weights = meta.get("weights")
    if weights is not None and not (isinstance(weights, dict)
                                    and isinstance(weights.get("sha256"), str)
                                    and type(weights.get("bytes")) is int):
        raise CheckpointError(f"{cfg}: 'weights' must hold the weights file's 'sha256' and "
                              "'bytes'")
    return meta


def _read_verified(file: Path, recorded: Optional[dict], where: Path) -> bytes:
    """The bytes of ``file``, checked against the size and sha256 recorded in ``where``."""
    try:
        blob = file.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{file} cannot be read: {exc.strerror}") from exc
    expected = f" ({recorded['bytes']} bytes recorded in {where})" if recorded else ""
    if not blob:
        raise CheckpointError(f"{file} is empty{expected}; the checkpoint is damaged")
    if recorded:
        if len(blob) < recorded["bytes"]:
            raise CheckpointError(f"{file} is truncated: {len(blob)} of the {recorded['bytes']} "
                                  f"bytes recorded in {where}")
        if len(blob) != recorded["bytes"] or hashlib.sha256(blob).hexdigest() != recorded["sha256"]:
            raise CheckpointError(f"{file} does not match the sha256 recorded in {where}: it "
                                  "was modified or damaged after saving")
    return blob


def _parse_safetensors(file: Path, blob: bytes) -> Dict[str, torch.Tensor]:
    try:
        return load_safetensors(blob)
    except Exception as exc:  # safetensors raises its own error type (and others)
        raise CheckpointError(f"{file} is not a readable safetensors file ({_one_line(exc)}); "
                              "the checkpoint is damaged") from exc


def _check_fits(model: nn.Module, state: Dict[str, torch.Tensor], weights: Path, cfg: Path) -> None:
    """Every tensor of ``model`` is in ``state`` with its shape and dtype, and no other."""
    expected = model.state_dict()
    problems = []
    for key, want in expected.items():
        got = state.get(key)
        if got is None:
            problems.append(f"{key} is missing from the weights")
        elif got.shape != want.shape:
            problems.append(f"{key} is {tuple(got.shape)} in the weights but "
                            f"{tuple(want.shape)} in the model {cfg.name} describes")
        elif got.dtype != want.dtype:
            problems.append(f"{key} is {got.dtype} in the weights but {want.dtype} in the model")
    problems += [f"the weights hold {key}, which the model has not" for key in state
                 if key not in expected]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"{weights} does not fit {cfg}: {problems[0]}{more}; was "
                              f"{cfg.name} edited?")


def load_checkpoint(path: os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> Tuple[nn.Module, Dict[str, Any]]:
    """Rebuilds the model from its config and loads its weights (no pickle, no code).

    The weights file is checked against the size and sha256 in ``config.json``,
    the tensors against the model the config describes, and the config against
    the saved vocabularies (the registered check).

    Returns:
        (model in eval mode, the ``extra`` dict saved with it).

    Raises:
        CheckpointError: any of that fails (one line naming the file).
    """
    path = Path(path)
    meta = read_checkpoint_meta(path)
    cfg, wfile = path / CONFIG, path / WEIGHTS
    name = meta["class"]
    if name not in _REGISTRY:
        raise CheckpointError(f"{cfg}: unknown model class {name!r} (known: {sorted(_REGISTRY)})")
    config_cls, model_cls, check = _REGISTRY[name]
    state = _parse_safetensors(wfile, _read_verified(wfile, meta.get("weights"), cfg))
    try:
        config = config_cls.from_dict(meta["config"])
    except Exception as exc:  # any malformed field of a hand-edited or damaged file
        raise CheckpointError(f"{cfg}: 'config' does not describe a {name} "
                              f"({type(exc).__name__}: {_one_line(exc)})") from exc
    try:
        model = model_cls(config)
    except Exception as exc:
        raise CheckpointError(f"{cfg}: cannot build a {name} from 'config' "
                              f"({type(exc).__name__}: {_one_line(exc)})") from exc
    _check_fits(model, state, wfile, cfg)
    if check is not None:
        problem = check(config, meta["extra"])
        if problem:
            raise CheckpointError(f"{cfg}: {problem}")
    model.load_state_dict(state)
    model.to(map_location)
    model.eval()
    return model, meta["extra"]


def load_training_state(path: os.PathLike) -> Optional[Tuple[Dict[str, torch.Tensor], dict]]:
    """The training state saved with the checkpoint in ``path``: (tensors, JSON dict),
    or None when the checkpoint has none (saved outside a training, or by an older
    structinf).

    Raises:
        CheckpointError: the state is damaged or belongs to other weights.
    """
    path = Path(path)
    info_file, state_file = path / TRAINING_META, path / TRAINING_STATE
    if not info_file.is_file() and not state_file.is_file():
        return None
    if not info_file.is_file() or not state_file.is_file():
        raise CheckpointError(f"{path}: {TRAINING_META} and {TRAINING_STATE} go together; one "
                              "is missing")
    try:
        info = json.loads(info_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{info_file} cannot be read ({_one_line(exc)})") from exc
    if not (isinstance(info, dict) and isinstance(info.get("sha256"), str)
            and type(info.get("bytes")) is int):
        raise CheckpointError(f"{info_file} does not record its state file's 'sha256' and 'bytes'")
    weights = (read_checkpoint_meta(path).get("weights") or {}).get("sha256")
    if info.get("weights_sha256") != weights:
        raise CheckpointError(f"{info_file} belongs to other weights than {path / WEIGHTS}")
    tensors = _parse_safetensors(state_file, _read_verified(state_file, info, info_file))
    return tensors, info
