"""How every training recipe runs the HF ``Trainer``: the project's ``TrainingArguments`` defaults, the user's own
``TrainingArguments`` on top, checkpoints and resuming, and pushing the finished model to the Hub.

A recipe's output folder is published whole at the end (``staging.staged_folder``), so checkpoints cannot live in
it: they go to a folder beside it, ``OUT.checkpoints`` unless ``output_dir`` says otherwise. It is created only when
checkpoints are asked for, is never cleaned up (it is what a killed run resumes from), and one that holds an earlier
run's checkpoints is refused unless that run is resumed.

    pretrain(root, "runs/bb", preset="tiny", save_steps=100, save_total_limit=2, report_to="tensorboard")
    pretrain(root, "runs/bb", preset="tiny", save_steps=100, resume_from_checkpoint=True)   # after a kill
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainingArguments

from ..staging import check_outside_inputs

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def training_arguments(output_dir: str | os.PathLike, **kwargs) -> TrainingArguments:
    """TrainingArguments with the project's defaults: no external loggers, no checkpoints, gloo when distributed
    on CPU; ``kwargs`` (the recipe's settings, then the user's) override them.

    Without a GPU, ``use_cpu`` is set: otherwise accelerate leaves ``torchrun`` CPU processes unsynchronised
    (each trains its own copy, no DDP). Every recipe's model uses all its trainable parameters (towers left out of
    the loss are frozen), so DDP is told not to search for unused ones after every backward pass.
    """
    on_cpu = not torch.cuda.is_available()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    defaults = dict(output_dir=str(output_dir), report_to="none", save_strategy="no", logging_steps=50,
                    use_cpu=on_cpu, ddp_backend="gloo" if distributed and on_cpu else None,
                    remove_unused_columns=False, dataloader_pin_memory=torch.cuda.is_available(), seed=0,
                    ddp_find_unused_parameters=False)
    defaults.update(kwargs)
    return TrainingArguments(**defaults)


@dataclass
class RunOptions:
    """The user's ``TrainingArguments`` for one run, checked, split into what the ``Trainer`` gets and what the
    package does itself."""

    trainer_args: dict = field(default_factory=dict)
    checkpoint_dir: Path | None = None          # None: no checkpoints
    resume_from_checkpoint: str | None = None   # the checkpoint folder to resume from
    hub_repo_id: str | None = None              # push the finished model folder here
    hub_private: bool = False

    def training_arguments(self, staging: Path, **recipe) -> TrainingArguments:
        """The run's ``TrainingArguments``: the project's defaults, the recipe's settings, then the user's. The
        ``output_dir`` is the checkpoint folder, else the staging folder (logs then travel with the model)."""
        output_dir = self.checkpoint_dir if self.checkpoint_dir is not None else staging
        return training_arguments(output_dir, **{**recipe, **self.trainer_args})


def run_options(out_dir: str | os.PathLike, training_args: dict | None = None, inputs=()) -> RunOptions:
    """Check the user's ``TrainingArguments`` for a run writing ``out_dir`` from ``inputs``, before any work.

    ``output_dir`` is the checkpoint folder (default ``OUT.checkpoints``; never the output, inside it or around
    it, since the output is put in place whole at the end, nor any of the inputs); ``resume_from_checkpoint`` is a
    checkpoint folder, or ``True``/``"last"`` for the newest complete one there; ``push_to_hub`` uploads the
    finished folder to ``hub_model_id`` (default: the folder's name), private with ``hub_private_repo``.
    ``save_steps`` alone means ``save_strategy="steps"``.
    """
    given = dict(training_args or {})
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise ValueError(f"{name!r} is not a TrainingArguments field"
                             f"{f'; did you mean {close[0]!r}?' if close else '.'}")
    out_dir = Path(out_dir)
    resume = given.pop("resume_from_checkpoint", None)
    push = given.pop("push_to_hub", False)
    repo_id = given.pop("hub_model_id", None)
    private = bool(given.pop("hub_private_repo", False) or False)
    checkpoint_dir = given.pop("output_dir", None)
    if "save_steps" in given and "save_strategy" not in given:
        given["save_strategy"] = "steps"
    saving = given.get("save_strategy", "no") != "no"  # transformers' SaveStrategy members equal their strings
    if saving or resume not in (None, False):
        checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir.with_name(out_dir.name + ".checkpoints")
    elif checkpoint_dir is not None:
        raise ValueError("output_dir (the checkpoint folder) is used only with checkpoints: give save_steps or "
                         "save_strategy too.")
    if (repo_id or private) and not push:
        raise ValueError("hub_model_id and hub_private_repo (--hub-model-id, --private) name the repo of "
                         "push_to_hub (--push-to-hub), and it is not asked for.")
    if checkpoint_dir is not None:
        target, out = checkpoint_dir.expanduser().resolve(), out_dir.expanduser().resolve()
        if target == out or out in target.parents or target in out.parents:
            raise ValueError(f"--checkpoint-dir {checkpoint_dir} is, holds or lies inside the output {out_dir}, "
                             "which is put in place whole at the end; keep checkpoints beside it (the default is "
                             f"{out_dir.name}.checkpoints).")
        check_outside_inputs(checkpoint_dir, inputs, "--checkpoint-dir")
        if checkpoint_dir.exists() and not checkpoint_dir.is_dir():
            raise ValueError(f"--checkpoint-dir {checkpoint_dir} is not a folder.")
    if resume in (None, False):
        resume = None
        if checkpoint_dir is not None and _checkpoints(checkpoint_dir):
            raise ValueError(f"{checkpoint_dir} holds the checkpoints of an earlier run; resume it "
                             "(--resume-from-checkpoint last) or choose another --checkpoint-dir.")
    elif resume is True or resume == "last":
        complete = [path for path in _checkpoints(checkpoint_dir) if _is_complete(path)]
        if not complete:
            raise ValueError(f"--resume-from-checkpoint last: {checkpoint_dir} holds no complete checkpoint.")
        resume = str(complete[-1])
    elif not _is_complete(Path(resume)):
        raise ValueError(f"--resume-from-checkpoint {resume}: not a complete checkpoint folder "
                         "(no readable trainer_state.json).")
    return RunOptions(trainer_args=given, checkpoint_dir=checkpoint_dir, resume_from_checkpoint=resume,
                      hub_repo_id=(repo_id or out_dir.name) if push else None, hub_private=private)


def _checkpoints(folder: Path | None) -> list[Path]:
    """The ``checkpoint-N`` folders in ``folder``, oldest first."""
    if folder is None or not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := CHECKPOINT_NAME.match(p.name))]
    return [path for _, path in sorted(found)]


def _is_complete(checkpoint: Path) -> bool:
    """The Trainer writes ``trainer_state.json`` last: a checkpoint killed while being written has none (or half)."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


class CollatorEpochCallback(TrainerCallback):
    """Tells the collator which epoch starts, before the Trainer creates the epoch's data iterator, so that its
    random draws (offsets, masks, positives) are those of that epoch, in a resumed run as in the original one."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(int(state.epoch or 0))


def train(trainer, options: RunOptions):
    """``trainer.train()``, resumed from the run's checkpoint when one was asked for."""
    if hasattr(trainer.data_collator, "set_epoch"):
        trainer.add_callback(CollatorEpochCallback(trainer.data_collator))
    return trainer.train(resume_from_checkpoint=options.resume_from_checkpoint)


def push_result(out_dir: Path, options: RunOptions) -> None:
    """Upload the finished model folder to the Hub when the run asked for it (process 0 only)."""
    if options.hub_repo_id is None or int(os.environ.get("RANK", "0")) != 0:
        return
    from ..hub import upload

    upload(out_dir, options.hub_repo_id, repo_type="model", private=options.hub_private,
           commit_message=f"Upload {out_dir.name} (trained by bioscan5m)")


def replicas_in_sync(model: torch.nn.Module) -> bool | None:
    """Whether every process ends training with the same weights (``None`` when not distributed).

    A cheap DDP sanity check, recorded with the run: processes that train unsynchronised copies (as accelerate's
    CPU processes do without ``use_cpu``) drift apart after the first step.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def parse_training_arg(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` from the command line: VALUE read as JSON where it parses (numbers, true/false, null,
    lists), else as text. The key is checked later, with the others, by `run_options`."""
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not sep or not key:
        raise ValueError(f"--training-arg {text!r}: expected KEY=VALUE, e.g. warmup_steps=100.")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


__all__ = ["RunOptions", "run_options", "training_arguments", "train", "push_result", "replicas_in_sync",
           "parse_training_arg", "CollatorEpochCallback"]
