"""Training as users run it: their TrainingArguments on every recipe, checkpoints beside the model folder, a
killed run resumed to the same weights as an uninterrupted one, the finished folder pushed to the Hub."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bioscan5m.cli import build_parser
from bioscan5m.cli.arguments import trainer_options
from bioscan5m.training.collators import KmerMLMCollator
from bioscan5m.training.trainer_runs import parse_training_arg, run_options

RUN = dict(preset="tiny", max_steps=16, max_barcodes=2000, save_steps=4, logging_steps=1)

KILLED_RUN = """
import os, signal, sys
from transformers import TrainerCallback
from bioscan5m.training import pretrain as recipe, trainer_runs

class KillAtStep10(TrainerCallback):       # kill -9 between the checkpoints of steps 8 and 12
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 10:
            os.kill(os.getpid(), signal.SIGKILL)

def train_then_die(trainer, options):
    trainer.add_callback(KillAtStep10())
    return trainer_runs.train(trainer, options)

recipe.train = train_then_die
recipe.pretrain(sys.argv[1], sys.argv[2], **{RUN})
"""


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(bold_root, tmp_path):
    from bioscan5m.training.pretrain import pretrain

    whole = pretrain(bold_root, tmp_path / "whole", **RUN)
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN.replace("{RUN}", repr(RUN)), str(bold_root),
                             str(tmp_path / "resumed")], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = tmp_path / "resumed.checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-4", "checkpoint-8"]
    assert not (tmp_path / "resumed").exists()  # nothing that loads as complete
    with pytest.raises(ValueError, match="holds the checkpoints of an earlier run; resume it"):
        pretrain(bold_root, tmp_path / "resumed", **RUN)  # a new run would write over them

    resumed = pretrain(bold_root, tmp_path / "resumed", resume_from_checkpoint="last", **RUN)
    final = {name: tensor for name, tensor in load_file(whole / "model.safetensors").items()}
    again = load_file(resumed / "model.safetensors")
    assert final.keys() == again.keys()
    for name in final:
        torch.testing.assert_close(again[name], final[name], rtol=0, atol=1e-6, msg=name)
    losses = [json.loads((path / "trainer_state.json").read_text())["log_history"][-1]["loss"]
              for path in (checkpoints / "checkpoint-16", whole.with_name("whole.checkpoints") / "checkpoint-16")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left behind


def test_collator_draws_depend_on_seed_epoch_and_batch_only(tiny_barcodebert):
    from bioscan5m.tokenization import KmerTokenizerFast

    tokenizer = KmerTokenizerFast.from_pretrained(str(tiny_barcodebert))
    batch = [{"dna_barcode": "ACGT" * 40}, {"dna_barcode": "TTGCA" * 30}]
    collator = KmerMLMCollator(tokenizer, seed=3)
    first = collator(batch)["input_ids"]
    collator([{"dna_barcode": "GGGA" * 40}])                       # an earlier batch changes nothing
    assert torch.equal(collator(batch)["input_ids"], first)
    collator.set_epoch(1)
    assert not torch.equal(collator(batch)["input_ids"], first)    # a new epoch, new masks and offsets
    assert torch.equal(KmerMLMCollator(tokenizer, seed=3)(batch)["input_ids"], first)


def test_checkpoint_options_are_checked_before_any_work(tmp_path):
    out = tmp_path / "model"
    plain = run_options(out, {})
    assert plain.checkpoint_dir is None and plain.trainer_args == {}  # no checkpoints unless asked
    options = run_options(out, {"save_steps": 50, "report_to": ["tensorboard"], "bf16": True})
    assert options.checkpoint_dir == tmp_path / "model.checkpoints"
    assert options.trainer_args == {"save_steps": 50, "save_strategy": "steps", "report_to": ["tensorboard"],
                                    "bf16": True}
    assert options.training_arguments(tmp_path / "staging", learning_rate=1e-3, save_steps=10).save_steps == 50
    with pytest.raises(ValueError, match="'warmup_step' is not a TrainingArguments field; did you mean 'warmup_steps'"):
        run_options(out, {"warmup_step": 10})
    with pytest.raises(ValueError, match="holds no complete checkpoint"):
        run_options(out, {"save_steps": 5, "resume_from_checkpoint": "last"})
    half_written = tmp_path / "model.checkpoints" / "checkpoint-5"
    half_written.mkdir(parents=True)          # killed while it was written: no trainer_state.json
    with pytest.raises(ValueError, match="not a complete checkpoint folder"):
        run_options(out, {"resume_from_checkpoint": str(half_written)})
    with pytest.raises(ValueError, match="used only with checkpoints"):
        run_options(out, {"output_dir": str(tmp_path / "elsewhere")})
    pushed = run_options(out, {"push_to_hub": True, "hub_private_repo": True})
    assert (pushed.hub_repo_id, pushed.hub_private) == ("model", True)
    with pytest.raises(ValueError, match="it is not asked for"):
        run_options(out, {"hub_model_id": "me/bb"})


@pytest.mark.parametrize("where, message", [("{out}", "is, holds or lies inside the output"),
                                            ("{out}/checkpoints", "is, holds or lies inside the output"),
                                            ("{data}", "is, or holds, this command's input"),
                                            ("{data}/bioscan5m/checkpoints", "lies inside this command's input"),
                                            ("{file}", "is not a folder")])
def test_checkpoints_never_go_into_the_output_or_an_input(tmp_path, where, message):
    data = tmp_path / "release"
    (data / "bioscan5m").mkdir(parents=True)
    (tmp_path / "file").write_text("")
    checkpoints = where.format(out=tmp_path / "model", data=data, file=tmp_path / "file")
    with pytest.raises((ValueError, OSError), match=message):
        run_options(tmp_path / "model", {"save_steps": 5, "output_dir": checkpoints}, inputs=(data,))
    assert run_options(tmp_path / "model", {"save_steps": 5}, inputs=(data,)).checkpoint_dir == \
        tmp_path / "model.checkpoints"


def test_command_line_trainer_options():
    parser = build_parser()
    args = parser.parse_args(["pretrain", "--data", "root", "--out", "m", "--report-to", "tensorboard,wandb",
                              "--save-steps", "100", "--save-total-limit", "2", "--resume-from-checkpoint", "last",
                              "--bf16", "--gradient-accumulation-steps", "4", "--push-to-hub", "--hub-model-id",
                              "me/bb", "--checkpoint-dir", "ck", "--training-arg", "warmup_steps=100",
                              "--training-arg", "optim=adamw_torch", "--training-arg", "max_grad_norm=null"])
    assert trainer_options(args) == {
        "report_to": ["tensorboard", "wandb"], "save_steps": 100, "save_total_limit": 2,
        "resume_from_checkpoint": "last", "bf16": True, "gradient_accumulation_steps": 4, "push_to_hub": True,
        "hub_model_id": "me/bb", "output_dir": "ck", "warmup_steps": 100, "optim": "adamw_torch",
        "max_grad_norm": None}
    assert trainer_options(parser.parse_args(["train-clip", "--data", "r", "--out", "m"])) == {}
    assert trainer_options(parser.parse_args(["finetune", "--model", "p", "--data", "r", "--out", "m",
                                              "--fp16"])) == {"fp16": True}
    assert parse_training_arg("--lr-scheduler-type=linear") == ("lr_scheduler_type", "linear")
    with pytest.raises(ValueError, match="--training-arg max_steps: this command sets it with --max-steps"):
        trainer_options(parser.parse_args(["pretrain", "--data", "r", "--out", "m", "--training-arg", "max_steps=3"]))
    for option in (["--lr", "inf"], ["--lr", "0"], ["--epochs", "0"], ["--epochs", "nan"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["pretrain", "--data", "r", "--out", "m", *option])
    for argv in (["serve", "--port", "70000"], ["train-clip", "--data", "r", "--out", "m", "--num-workers", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_training_arg("warmup_steps")


def test_bad_trainer_option_is_one_line_on_the_command_line(bold_root, tmp_path):
    done = subprocess.run([sys.executable, "-m", "bioscan5m.cli", "pretrain", "--data", str(bold_root), "--out",
                           str(tmp_path / "m"), "--preset", "tiny", "--training-arg", "warmup_step=3"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "'warmup_step' is not a TrainingArguments field; did you mean 'warmup_steps'" in done.stderr
    assert not Path(tmp_path / "m").exists()


def test_push_to_hub_uploads_the_finished_model(bold_root, tmp_path, monkeypatch):
    import huggingface_hub

    from bioscan5m.training.pretrain import pretrain

    calls = []

    class RecordingApi:
        def create_repo(self, repo_id, repo_type, private, exist_ok):
            calls.append(("create_repo", repo_id, repo_type, private))

        def upload_folder(self, repo_id, folder_path, repo_type, commit_message):
            calls.append(("upload_folder", repo_id, repo_type, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    out = pretrain(bold_root, tmp_path / "bb", preset="tiny", max_steps=2, max_barcodes=200, push_to_hub=True,
                   hub_model_id="me/barcodebert-tiny", hub_private_repo=True)
    assert calls[0] == ("create_repo", "me/barcodebert-tiny", "model", True)
    assert calls[1][:3] == ("upload_folder", "me/barcodebert-tiny", "model")
    assert {"model.safetensors", "README.md", "pretraining.json"} <= set(calls[1][3])
    assert "training_args.bin" not in calls[1][3] and out.is_dir()
    # upload_folder is called without delete_patterns (the recording API would refuse them): files already in an
    # existing repo stay, and the upload is one more commit in its history.
