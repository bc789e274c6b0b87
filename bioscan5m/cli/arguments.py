"""Options shared by several commands, and the argument types that refuse bad values with one clear line."""

from __future__ import annotations

import argparse
import sys


def add_seed_arg(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def add_overwrite_arg(p) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output if it exists (it is replaced only once the new one is complete)")


#: Presets of the training commands (BarcodeBERT's in ``training.presets``, CLIBD's in ``training.train_clibd``;
#: a test checks both against this list, which the parser needs without importing torch).
PRESET_NAMES = ("paper", "cpu-small", "tiny")


def add_release_root(p, *, positional: bool = False, needs: str = "") -> None:
    """``--data ROOT``, the release root of every command; where ROOT was positional, it still may be. ``needs``
    says what the command needs in it beyond the metadata (e.g. "with images")."""
    if positional:
        p.add_argument("root", nargs="?", default=None, help="release root (the same as --data)")
    p.add_argument("--data", required=not positional, metavar="ROOT",
                   help=f"release root{' ' + needs if needs else ''} (the folder holding bioscan5m/metadata/...)")


def release_root(args) -> str:
    """The release root of a command that takes it as ``--data`` or positionally (not both, unless equal)."""
    given = [value for value in (getattr(args, "data", None), getattr(args, "root", None)) if value is not None]
    problem = ("the release root is missing: give --data ROOT" if not given else
               f"two release roots given ({given[0]} and {given[1]})" if len(set(given)) > 1 else None)
    if problem:
        print(f"bioscan5m {args.command}: error: {problem}", file=sys.stderr)
        raise SystemExit(2)  # argparse's status for a usage error
    return given[0]


def add_split_arg(p, default: str, what: str = "records") -> None:
    p.add_argument("--split", "--splits", dest="split", default=default,
                   help=f"{what}: a split expression such as 'train+val' or 'all' (default {default})")


def _integer_from(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _integer_from(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _integer_from(text, 0, "a whole number of at least 0")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port from 1 to 65535, got {text!r}")
    return value


def nucleotides(text: str) -> int | None:
    return None if text.lower() == "none" else positive_int(text)


def positive_int_list(text: str) -> list[int]:
    """``1,3,5``: comma-separated positive integers."""
    values = csv_list(text)
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,3,5, got {text!r}")
    return [positive_int(value) for value in values]


def csv_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]



def add_reading_frames_arg(p) -> None:
    p.add_argument("--reading-frames", type=positive_int, default=1,
                   help="BarcodeBERT models: average each barcode's vectors over this many start offsets "
                        "(1 to k; k makes barcodes that start at different positions comparable; k times the compute)")


def add_align_arg(p) -> None:
    p.add_argument("--align-to-reference", action=argparse.BooleanOptionalAction, default=None,
                   help="place barcodes in COI-5P reference coordinates before cutting k-mers, so every barcode's "
                        "k-mers are cut at the same gene positions (saved with the tokenizer; default: the preset's "
                        "setting, or for finetune the pretrained tokenizer's)")


def add_run_length_args(p) -> None:
    p.add_argument("--epochs", type=positive_float, default=None, help="override the preset's epochs")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps")
    p.add_argument("--max-records", "--max-barcodes", dest="max_barcodes", type=positive_int, default=None, metavar="N",
                   help="use only this many barcodes (quick runs)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="per-process batch size")
    p.add_argument("--lr", dest="learning_rate", type=positive_float, default=None,
                   help="override the preset's learning rate")
    add_seed_arg(p)
    add_overwrite_arg(p)




def add_trainer_args(p) -> None:
    """The ``TrainingArguments`` users reach for, and any other field through ``--training-arg KEY=VALUE``."""
    g = p.add_argument_group("Trainer options (TrainingArguments fields; docs/training.md)")
    g.add_argument("--report-to", default=None, metavar="NAME[,NAME]",
                   help="loggers: tensorboard, wandb, mlflow, trackio, all or none (default none)")
    g.add_argument("--logging-steps", type=positive_int, default=None, help="log the loss every N steps")
    g.add_argument("--save-steps", type=positive_int, default=None,
                   help="save a checkpoint every N steps (into --checkpoint-dir)")
    g.add_argument("--save-total-limit", type=positive_int, default=None, help="keep only the newest N checkpoints")
    g.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="where checkpoints go (default OUT.checkpoints, beside the model folder)")
    g.add_argument("--resume-from-checkpoint", default=None, metavar="PATH|last",
                   help="resume a killed run from a checkpoint folder, or the newest complete one ('last')")
    g.add_argument("--bf16", action="store_true", default=None, help="bfloat16 mixed precision (CPU or GPU)")
    g.add_argument("--fp16", action="store_true", default=None, help="float16 mixed precision (GPU)")
    g.add_argument("--gradient-accumulation-steps", type=positive_int, default=None,
                   help="accumulate gradients over N batches per optimiser step")
    g.add_argument("--push-to-hub", action="store_true", default=None,
                   help="upload the finished model folder to the Hub (--hub-model-id, default the folder's name)")
    g.add_argument("--hub-model-id", default=None, metavar="REPO", help="Hub repo of --push-to-hub")
    g.add_argument("--private", dest="hub_private_repo", action="store_true", default=None,
                   help="make the --push-to-hub repo private")
    g.add_argument("--training-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainingArguments field (repeatable), e.g. warmup_steps=100 or "
                        "optim=adamw_torch_fused; VALUE is read as JSON where it parses, else as text")


#: ``add_trainer_args`` options that are ``TrainingArguments`` fields of the same name (``--checkpoint-dir`` is
#: ``output_dir``).
_TRAINER_FIELDS = ("report_to", "logging_steps", "save_steps", "save_total_limit", "resume_from_checkpoint", "bf16",
                   "fp16", "gradient_accumulation_steps", "push_to_hub", "hub_model_id", "hub_private_repo")


#: ``TrainingArguments`` fields the training commands set from options of their own.
_OWN_OPTIONS = {"max_steps": "--max-steps", "learning_rate": "--lr", "num_train_epochs": "--epochs",
                "per_device_train_batch_size": "--batch-size", "seed": "--seed", "output_dir": "--checkpoint-dir"}


def trainer_options(args) -> dict:
    """The ``TrainingArguments`` fields the user set on the command line (the options left out are not set)."""
    from ..training.trainer_runs import parse_training_arg

    chosen = dict(parse_training_arg(text) for text in args.training_arg)
    for name, option in _OWN_OPTIONS.items():
        if name in chosen:
            raise ValueError(f"--training-arg {name}: this command sets it with {option}; give it there.")
    chosen.update({name: getattr(args, name) for name in _TRAINER_FIELDS if getattr(args, name) is not None})
    if args.checkpoint_dir is not None:
        chosen["output_dir"] = args.checkpoint_dir
    if isinstance(chosen.get("report_to"), str):
        chosen["report_to"] = csv_list(chosen["report_to"])
    return chosen


def print_results(results: dict) -> None:
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return
    for name, value in results.items():
        print(f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value}")
