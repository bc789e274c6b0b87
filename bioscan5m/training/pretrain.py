"""Masked-language-model pretraining of BarcodeBERT on the unique barcodes of ``pretrain`` + ``other_heldout``.

Runs on the HF ``Trainer``, so the same call works on one CPU, one GPU, or several processes under
``torchrun``/``accelerate launch`` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import datasets
import torch
from transformers import Trainer

from ..modeling import BarcodeBertConfig, BarcodeBertForMaskedLM
from ..modeling.model_card import write_model_card
from ..staging import check_output, staged_folder
from ..tokenization import KmerTokenizerFast
from .collators import KmerMLMCollator
from .data import load_barcode_sets
from .presets import get_preset
from .trainer_runs import push_result, replicas_in_sync, run_options, train

#: Barcodes of ``train`` used to report MLM accuracy after pretraining (BarcodeBERT validates MLM on train).
MLM_EVAL_BARCODES = 1024


def pretrain(data_root: str | os.PathLike, out_dir: str | os.PathLike, preset: str = "cpu-small",
             max_steps: int | None = None, max_barcodes: int | None = None, epochs: float | None = None,
             batch_size: int | None = None, learning_rate: float | None = None, k_mer: int | None = None,
             mlm_scheme: str | None = None, tokenizer_vocabulary: str | None = None,
             align_to_reference: bool | None = None, seed: int = 0, overwrite: bool = False,
             **training_args) -> Path:
    """Pretrain a BarcodeBERT masked-language model and save it (weights, tokenizer, code, model card).

    Args:
        data_root: a BIOSCAN-5M release root (e.g. ``~/bioscan``) or its metadata CSV.
        out_dir: where the model folder is written (it appears only once complete).
        preset: ``paper``, ``cpu-small`` or ``tiny`` (see :mod:`bioscan5m.training.presets`).
        max_steps: stop after this many optimiser steps (overrides ``epochs``).
        max_barcodes: use only the first N unique pretraining barcodes (quick runs).
        epochs, batch_size, learning_rate, k_mer, mlm_scheme, tokenizer_vocabulary, align_to_reference: override
            the preset.
        seed: seeds weights, data order and masking.
        overwrite: replace ``out_dir`` if it exists (once the new model is saved); otherwise it is refused.
        **training_args: any ``TrainingArguments`` field, over the preset's (``report_to``, ``save_steps``,
            ``resume_from_checkpoint``, ``bf16``, ``push_to_hub``, ...; see :mod:`bioscan5m.training.trainer_runs`).

    Returns:
        The output folder.
    """
    settings = get_preset(preset, k_mer=k_mer, mlm_scheme=mlm_scheme, tokenizer_vocabulary=tokenizer_vocabulary,
                          align_to_reference=align_to_reference,
                          pretrain_epochs=epochs, pretrain_batch_size=batch_size,
                          pretrain_learning_rate=learning_rate)
    out_dir = check_output(out_dir, overwrite, inputs=(data_root,))  # before any work
    options = run_options(out_dir, training_args, inputs=(data_root,))
    sets = load_barcode_sets(data_root, roles=("pretrain", "train"))
    barcodes = sets["pretrain"]["dna_barcode"]
    if max_barcodes is not None:
        barcodes = barcodes.iloc[:max_barcodes]
    train_set = datasets.Dataset.from_dict({"dna_barcode": barcodes.tolist()})
    eval_set = datasets.Dataset.from_dict({"dna_barcode": sets["train"]["dna_barcode"].iloc[:MLM_EVAL_BARCODES].tolist()})

    tokenizer = KmerTokenizerFast(k=settings.k_mer, vocabulary=settings.tokenizer_vocabulary,
                                  align_to_reference=settings.align_to_reference)
    torch.manual_seed(seed)
    model = BarcodeBertForMaskedLM(BarcodeBertConfig(**settings.model_kwargs()))
    # Each process masks differently; the data order is already sharded by the Trainer.
    rank = int(os.environ.get("RANK", "0"))
    collator = KmerMLMCollator(tokenizer, scheme=settings.mlm_scheme, seed=seed + rank)
    with staged_folder(out_dir, overwrite, main_process=rank == 0) as staging:
        args = options.training_arguments(staging, per_device_train_batch_size=settings.pretrain_batch_size,
                                          per_device_eval_batch_size=settings.pretrain_batch_size * 2,
                                          num_train_epochs=settings.pretrain_epochs, max_steps=max_steps or -1,
                                          learning_rate=settings.pretrain_learning_rate, weight_decay=0.0,
                                          lr_scheduler_type="cosine", warmup_steps=settings.warmup, seed=seed)
        trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                          data_collator=collator, processing_class=tokenizer)
        started = time.time()
        train_output = train(trainer, options)
        minutes = (time.time() - started) / 60
        in_sync = replicas_in_sync(trainer.model)
        # MLM accuracy on held-out train barcodes, with the training masking but no offset.
        eval_collator = KmerMLMCollator(tokenizer, scheme=settings.mlm_scheme, random_offset=False, seed=seed)
        metrics = mlm_accuracy(trainer.model, eval_set["dna_barcode"], eval_collator, settings.pretrain_batch_size * 2)

        if trainer.is_world_process_zero():
            trainer.save_model(str(staging))          # weights, config, code files and tokenizer
            (staging / "training_args.bin").unlink(missing_ok=True)   # a pickle; the settings go to pretraining.json
            summary = {"preset": preset, "settings": settings.as_dict(), "pretrain_barcodes": len(train_set),
                       "steps": train_output.global_step, "train_loss": train_output.training_loss,
                       "minutes": round(minutes, 1), "world_size": args.world_size, "replicas_in_sync": in_sync,
                       **metrics}
            (staging / "pretraining.json").write_text(json.dumps(summary, indent=2))
            write_model_card(
                staging, model.config,
                model_name=out_dir.name, source="pretrained with masked-language modelling by `bioscan5m pretrain`",
                data=f"{len(train_set):,} unique barcodes of BIOSCAN-5M `pretrain` + `other_heldout`",
                training={"preset": preset, "MLM scheme": settings.mlm_scheme, "barcodes": describe_frame(tokenizer),
                          "steps": train_output.global_step,
                          "batch size": f"{settings.pretrain_batch_size} × {args.world_size} processes",
                          "learning rate": settings.pretrain_learning_rate, "time": f"{minutes:.1f} min",
                          "MLM accuracy on held-out barcodes": f"{metrics['mlm_accuracy']:.1f} %"},
            )
    push_result(out_dir, options)
    return out_dir


def describe_frame(tokenizer) -> str:
    """How the tokenizer places barcodes before cutting k-mers, for model cards."""
    if tokenizer.align_to_reference:
        return "placed in COI-5P reference coordinates before cutting k-mers (`align_to_reference`)"
    return "cut into k-mers from their first base"


@torch.inference_mode()
def mlm_accuracy(model: BarcodeBertForMaskedLM, sequences: list[str], collator: KmerMLMCollator,
                 batch_size: int) -> dict[str, float]:
    """Token accuracy of the MLM head on masked positions and on all scored positions, in percent (the unit of
    every result the package writes)."""
    model.eval()
    hits_masked = hits_all = n_masked = n_all = 0
    for start in range(0, len(sequences), batch_size):
        batch = collator([{"dna_barcode": s} for s in sequences[start:start + batch_size]])
        batch = {name: tensor.to(model.device) for name, tensor in batch.items()}
        predicted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
        scored = batch["labels"] != -100
        masked = scored & (batch["input_ids"] == collator.tokenizer.mask_token_id)
        correct = predicted == batch["labels"]
        hits_masked += int((correct & masked).sum())
        hits_all += int((correct & scored).sum())
        n_masked += int(masked.sum())
        n_all += int(scored.sum())
    return {"mlm_accuracy": 100 * hits_masked / max(n_masked, 1),
            "mlm_accuracy_all_scored": 100 * hits_all / max(n_all, 1)}
