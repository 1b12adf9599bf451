"""Training BLSTM-CRF (+) energies by conditional log-likelihood: the recipes and the loop."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from torch import Tensor, nn

from ..data import Prepared
from ..evaluate import predict, score_ids
from ..io import CONFIG, load_checkpoint, previous_checkpoint
from ..models import BLSTMCRF, energy_model_config
from ..models.encoder import word_cases
from .fit import TrainConfig, fit, seed_everything

__all__ = ["ENERGY_TRAIN_DEFAULTS", "energy_train_config", "resume_from", "train_energy"]


#: Training recipes for the energies (Adam; epochs bounded by early stopping).
ENERGY_TRAIN_DEFAULTS = {
    "twitter-pos": dict(epochs=80, batch_size=10, lr=2e-3, patience=10),
    "conll2003": dict(epochs=40, batch_size=16, lr=1e-3, patience=6),
    "ewt-large": dict(epochs=30, batch_size=16, lr=1e-3, patience=5),
}


def energy_train_config(task: str, **overrides) -> TrainConfig:
    cfg = dict(ENERGY_TRAIN_DEFAULTS.get(task, {}))
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**cfg)


def resume_from(out: Optional[Path], model: nn.Module, who: str, *, what: str = "settings",
                same: Callable[[dict], bool] = lambda extra: True) -> list:
    """Loads the checkpoint in ``out`` into ``model`` to continue its training.

    The checkpoint must hold the same model configuration (and satisfy
    ``same(extra)``); returns the training history saved with it. ``fit``, given
    the same folder, continues from the training state saved beside it.
    """
    if out is None or not (Path(out) / CONFIG).is_file():
        previous = None if out is None else previous_checkpoint(out)
        hint = ("" if previous is None else f"; a replacement of it was interrupted: the "
                f"previous checkpoint is at {previous} (move it back to {out})")
        raise FileNotFoundError(f"{who}: resume: no checkpoint in {out}{hint}")
    saved, extra = load_checkpoint(out, map_location=next(model.parameters()).device)
    if saved.config.to_dict() != model.config.to_dict() or not same(extra):
        raise ValueError(f"{who}: resume: the checkpoint in {out} has other {what} than the "
                         "ones asked for")
    model.load_state_dict(saved.state_dict())
    return list(extra.get("history", []))


def train_energy(p: Prepared, *, plus: bool, out: Optional[Path], cfg: TrainConfig,
                 hidden: Optional[int] = None, word_dim: int = 100, constrained: bool = False,
                 progress: bool = True, epoch_lines: Optional[bool] = None, device="cpu", word_vectors: Optional[Tensor] = None,
                 freeze_words: bool = False, on_epoch=None, resume: bool = False,
                 case_dim: int = 0):
    """Trains a BLSTM-CRF (+) energy by conditional log-likelihood.

    case_dim > 0 adds a casing feature of that size (:class:`structinf.models.encoder.EmbedderConfig`).
    With ``resume``, training continues from the checkpoint in ``out`` (its
    history, and the last epoch's weights, optimizer and random states; same
    model settings required) up to ``cfg.epochs``, ending bit for bit where an
    uninterrupted run would.

    Returns:
        (model with the best dev weights, training history).
    """
    scheme = p.task.scheme if constrained else None
    seed_everything(cfg.seed)
    mcfg = energy_model_config(p.task.name, p.labels.labels, len(p.words), len(p.chars),
                               plus=plus, hidden=hidden, word_dim=word_dim, scheme=scheme,
                               case_dim=case_dim)
    mcfg.embedder.freeze_words = freeze_words
    model = BLSTMCRF(mcfg, word_vectors)
    if case_dim > 0:
        model.embedder.set_word_cases(word_cases(p.words.itos))
    model = model.to(device)
    prior = resume_from(out, model, "train_energy", what="model settings") if resume else None
    dev = p.encoded["dev"]

    def dev_score(m: nn.Module) -> float:
        return score_ids(p, "dev", predict(m.decode, dev, device=device, shard=True))

    history = fit(model, p.encoded["train"], lambda m, b: m.loss(b), dev_score, cfg,
                  checkpoint=out, extra=p.vocab_extra(), progress=progress,
                  epoch_lines=epoch_lines,
                  desc=f"{p.task.name} {mcfg.kind}", device=device, on_epoch=on_epoch,
                  resume=prior)
    return model, history
