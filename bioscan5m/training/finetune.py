"""Fine-tuning a pretrained BarcodeBERT for taxonomic classification (one or several ranks) on ``train``,
reporting accuracy on ``test`` (closed world, unique barcodes). With ``freeze_encoder=True`` only the heads
train: the paper's linear probe run through the same script (``evaluation.probes.linear_probe`` is the fast
equivalent on cached embeddings)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import Trainer

from ..evaluation.probes import fit_linear_classifier
from ..evaluation.scoring import check_rank
from ..modeling import BarcodeBertForSequenceClassification
from ..modeling.model_card import write_model_card
from ..staging import check_output, staged_folder
from .collators import KmerClassificationCollator
from .data import load_barcode_sets
from ..embedding import embed_sequences
from .presets import get_preset
from .pretrain import describe_frame
from .trainer_runs import push_result, run_options, train


def _records(frame, ranks) -> datasets.Dataset:
    columns = ["dna_barcode"] + [f"{rank}_index" for rank in ranks]
    return datasets.Dataset.from_pandas(frame[columns], preserve_index=False)


@torch.inference_mode()
def predict_ranks(model: BarcodeBertForSequenceClassification, sequences: list[str], batch_size: int = 256,
                  tokenizer=None) -> dict[str, np.ndarray]:
    """Predicted class index per rank for each barcode, batched in length order."""
    model.eval()
    tokenizer = tokenizer or model.bert.tokenizer
    order = np.argsort([len(s) for s in sequences], kind="stable")
    predictions = {rank: np.empty(len(sequences), dtype=np.int64) for rank in model.config.classifier_ranks}
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = tokenizer([sequences[i] for i in index], padding=True, truncation=True, return_tensors="pt")
        output = model(input_ids=batch["input_ids"].to(model.device),
                       attention_mask=batch["attention_mask"].to(model.device))
        for rank, logits in output.rank_logits.items():
            predictions[rank][index] = logits.argmax(-1).cpu().numpy()
    return predictions


def finetune(model_dir: str | os.PathLike, data_root: str | os.PathLike, out_dir: str | os.PathLike,
             ranks: tuple[str, ...] = ("species",), preset: str = "cpu-small", epochs: float | None = None,
             batch_size: int | None = None, learning_rate: float | None = None, max_steps: int | None = None,
             max_barcodes: int | None = None, freeze_encoder: bool = False, head_init: str = "linear-probe",
             align_to_reference: bool | None = None, seed: int = 0, overwrite: bool = False,
             **training_args) -> dict:
    """Fine-tune ``model_dir`` to classify ``ranks`` and measure accuracy on ``test``.

    Args:
        model_dir: a pretrained BarcodeBERT folder (MLM or encoder).
        data_root: a BIOSCAN-5M release root.
        out_dir: where the fine-tuned model folder (with ``results.json`` and model card) is written; an existing
            one is refused unless ``overwrite``, and it appears only once complete.
        ranks: taxonomic ranks to predict, e.g. ``("species",)`` or ``("genus", "species")``.
        preset: supplies epochs, batch size and learning rate unless given here.
        max_steps / max_barcodes: cap the run (quick checks).
        freeze_encoder: train the heads only (linear probe through the Trainer).
        head_init: ``"linear-probe"`` starts each head from a linear probe fitted on the frozen embeddings
            ("LP-FT", Kumar et al. 2022): fine-tuning then starts from a good classifier instead of pushing
            random-head gradients into the pretrained encoder, which needs far fewer steps; ``"random"``: plain
            fine-tuning.
        align_to_reference: switch the tokenizer's COI-5P reference alignment on or off for fine-tuning and in the
            saved model (None: keep the pretrained tokenizer's setting). An encoder pretrained with random start
            offsets has seen every reading frame, so it can be fine-tuned on aligned barcodes.
        **training_args: any ``TrainingArguments`` field, over the preset's (see
            :mod:`bioscan5m.training.trainer_runs`).

    Returns:
        ``{"<rank>_test_accuracy": percent, ...}`` plus run details, also in ``out_dir/results.json``.
    """
    settings = get_preset(preset, finetune_epochs=epochs, finetune_batch_size=batch_size,
                          finetune_learning_rate=learning_rate)
    ranks = tuple(ranks)
    for name in ranks:
        check_rank(name)
    out_dir = check_output(out_dir, overwrite, inputs=(model_dir, data_root))  # before any work
    options = run_options(out_dir, training_args, inputs=(model_dir, data_root))
    sets = load_barcode_sets(data_root, roles=("train", "test"))
    labelled = sets["train"][(sets["train"][[f"{rank}_index" for rank in ranks]] >= 0).any(axis=1)]
    if max_barcodes is not None:
        labelled = labelled.iloc[:max_barcodes]
    rank_labels = {rank: list(sets.label_names[rank]) for rank in ranks}
    torch.manual_seed(seed)
    model = BarcodeBertForSequenceClassification.from_pretrained(
        str(model_dir), classifier_ranks=list(ranks), rank_labels=rank_labels)
    tokenizer = model.bert.tokenizer
    if align_to_reference is not None:
        tokenizer.align_to_reference = align_to_reference
    if head_init == "linear-probe":
        embeddings = embed_sequences(model.bert, labelled["dna_barcode"], progress=True)
        for rank_name in ranks:
            known = labelled[f"{rank_name}_index"].to_numpy() >= 0
            weight, bias = fit_linear_classifier(embeddings[known], labelled[f"{rank_name}_index"].to_numpy()[known],
                                                 len(rank_labels[rank_name]), seed=seed)
            with torch.no_grad():
                model.classifiers[rank_name].weight.copy_(weight)
                model.classifiers[rank_name].bias.copy_(bias)
    elif head_init != "random":
        raise ValueError(f"head_init must be 'linear-probe' or 'random', not {head_init!r}.")
    if freeze_encoder:
        model.bert.requires_grad_(False)
    rank = int(os.environ.get("RANK", "0"))
    collator = KmerClassificationCollator(tokenizer, ranks, random_offset=not freeze_encoder, seed=seed + rank)
    with staged_folder(out_dir, overwrite, main_process=rank == 0) as staging:
        args = options.training_arguments(staging, per_device_train_batch_size=settings.finetune_batch_size,
                                          num_train_epochs=settings.finetune_epochs, max_steps=max_steps or -1,
                                          learning_rate=settings.finetune_learning_rate, lr_scheduler_type="cosine",
                                          warmup_steps=0.1, weight_decay=0.01, seed=seed)
        trainer = Trainer(model=model, args=args, train_dataset=_records(labelled, ranks), data_collator=collator,
                          processing_class=tokenizer)
        started = time.time()
        train_output = train(trainer, options)
        minutes = (time.time() - started) / 60

        results = {"model": str(model_dir), "ranks": list(ranks), "freeze_encoder": freeze_encoder,
                   "train_barcodes": len(labelled), "steps": train_output.global_step, "minutes": round(minutes, 1)}
        if trainer.is_world_process_zero():
            predictions = predict_ranks(trainer.model, sets["test"]["dna_barcode"].tolist(), tokenizer=tokenizer)
            for rank_name in ranks:
                truth = sets["test"][f"{rank_name}_index"].to_numpy()
                known = truth >= 0
                correct = predictions[rank_name][known] == truth[known]
                results[f"{rank_name}_test_accuracy"] = 100.0 * float(np.mean(correct))
                results[f"{rank_name}_test_queries"] = int(known.sum())
            trainer.save_model(str(staging))
            (staging / "training_args.bin").unlink(missing_ok=True)
            (staging / "results.json").write_text(json.dumps(results, indent=2))
            kind = "linear probe (frozen encoder)" if freeze_encoder else "fine-tuned"
            write_model_card(
                staging, trainer.model.config,
                model_name=out_dir.name, source=f"{kind} from `{model_dir}` by `bioscan5m finetune`",
                data=f"{len(labelled):,} unique labelled barcodes of BIOSCAN-5M `train`",
                results={f"{rank_name} accuracy (closed world)": ("test", results[f"{rank_name}_test_accuracy"])
                         for rank_name in ranks},
                base_model=Path(model_dir).name,
                training={"barcodes": describe_frame(tokenizer), "epochs": settings.finetune_epochs,
                          "steps": train_output.global_step,
                          "batch size": f"{settings.finetune_batch_size} × {args.world_size} processes",
                          "learning rate": settings.finetune_learning_rate, "time": f"{minutes:.1f} min"},
            )
    push_result(out_dir, options)
    return results
