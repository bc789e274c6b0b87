"""Contrastive fine-tuning of a pretrained BarcodeBERT on ``train``: barcodes of one genus, and more tightly of one
species, are pulled together in the embedding space that 1-NN identification, retrieval and clustering use.

Batches are built from groups (``KmerGroupedCollator``: each barcode with ``group_size - 1`` others of its
species), and the loss is the supervised contrastive loss per rank (``BarcodeBertForContrastiveLearning``). After
training the encoder is measured with the paper's probes (linear probe species@test, 1-NN genus@test_unseen).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from transformers import Trainer

from ..modeling import BarcodeBertConfig, BarcodeBertForContrastiveLearning
from ..modeling.model_card import write_model_card
from ..staging import check_output, staged_folder
from .collators import KmerGroupedCollator
from .data import load_barcode_sets
from .presets import get_preset
from .pretrain import describe_frame
from .trainer_runs import push_result, replicas_in_sync, run_options, train
from ..evaluation.encoder_probes import probe
from ..evaluation.scoring import check_rank


def contrastive_finetune(model_dir: str | os.PathLike, data_root: str | os.PathLike, out_dir: str | os.PathLike,
                         ranks: tuple[str, ...] = ("genus", "species"), rank_weights: tuple[float, ...] | None = None,
                         preset: str = "cpu-small", epochs: float | None = None, batch_size: int | None = None,
                         learning_rate: float | None = None, temperature: float | None = None, group_size: int = 4,
                         pooling: str | None = None, per_position_size: int | None = None,
                         num_hidden_layers: int | None = None, max_steps: int | None = None,
                         max_barcodes: int | None = None, seed: int = 0, overwrite: bool = False,
                         **training_args) -> dict:
    """Contrastively fine-tune ``model_dir`` on the labelled ``train`` barcodes and probe the result.

    Args:
        model_dir: a pretrained BarcodeBERT folder (MLM, encoder or classifier).
        data_root: a BIOSCAN-5M release root.
        out_dir: where the fine-tuned encoder (``results.json``, model card) is written; it loads with
            ``AutoModel`` (also with ``trust_remote_code`` where ``bioscan5m`` is not installed).
        ranks: ranks with a contrastive term, coarse to fine; groups are drawn at the last (finest) rank.
        rank_weights: weight per rank (default 1 each).
        preset: supplies epochs, batch size, learning rate and temperature unless given here.
        epochs: passes over the labelled barcodes as anchors (each brings its group, so an epoch embeds
            ``group_size`` times as many barcodes).
        batch_size: barcodes per batch and process, groups included (a multiple of ``group_size``).
        group_size: barcodes of one species per group.
        pooling / per_position_size: how the encoder pools token states (``BarcodeBertConfig``; default: the
            pretrained model's). ``"per_position"`` needs a model pretrained on aligned barcodes.
        num_hidden_layers: keep only the first this many encoder layers (a faster encoder; default all).
        max_steps / max_barcodes: cap the run (quick checks).
        **training_args: any ``TrainingArguments`` field, over the preset's (see
            :mod:`bioscan5m.training.trainer_runs`).

    Returns:
        Run details and the probe results (``linear_probe_species_test``, ``knn_genus_test_unseen``,
        ``queries_per_second``), also in ``out_dir/results.json``.
    """
    settings = get_preset(preset, contrastive_epochs=epochs, contrastive_batch_size=batch_size,
                          contrastive_learning_rate=learning_rate, contrastive_temperature=temperature)
    if settings.contrastive_batch_size % group_size:
        raise ValueError(f"batch_size {settings.contrastive_batch_size} is not a multiple of group_size {group_size}.")
    ranks = tuple(ranks)
    for name in ranks:
        check_rank(name)
    out_dir = check_output(out_dir, overwrite, inputs=(model_dir, data_root))  # before any work
    options = run_options(out_dir, training_args, inputs=(model_dir, data_root))
    pretrained = BarcodeBertConfig.from_pretrained(str(model_dir))
    if num_hidden_layers is not None and not 1 <= num_hidden_layers <= pretrained.num_hidden_layers:
        raise ValueError(f"num_hidden_layers (--layers) keeps the first N of {model_dir}'s "
                         f"{pretrained.num_hidden_layers} encoder layers; {num_hidden_layers} is not one of 1-"
                         f"{pretrained.num_hidden_layers}.")
    labelled = load_barcode_sets(data_root, roles=("train",)).labelled("train", ranks[-1])
    if max_barcodes is not None:
        labelled = labelled.iloc[:max_barcodes]
    torch.manual_seed(seed)
    # A new configuration (not from_pretrained's keyword overrides) so that the settings are checked.
    architecture = {"pooling": pooling, "per_position_size": per_position_size, "num_hidden_layers": num_hidden_layers}
    config = BarcodeBertConfig(**{
        **pretrained.to_dict(),
        **{name: value for name, value in architecture.items() if value is not None},
        "contrastive_ranks": list(ranks), "contrastive_temperature": settings.contrastive_temperature,
        "contrastive_rank_weights": list(rank_weights) if rank_weights else None})   # None: 1 per rank
    model = BarcodeBertForContrastiveLearning.from_pretrained(str(model_dir), config=config)
    tokenizer = model.bert.tokenizer
    if model.config.pooling == "per_position" and not tokenizer.align_to_reference:
        raise ValueError(f"{model_dir} reads barcodes from their first base: per-position pooling needs a model "
                         "pretrained on barcodes aligned to the COI-5P reference (--align-to-reference).")
    # The probes that close the run search with FAISS (the evaluation extra): without it, fail before training.
    import faiss  # noqa: F401

    rank = int(os.environ.get("RANK", "0"))
    # Aligned barcodes are already in one frame; random start offsets would only be undone by the alignment.
    collator = KmerGroupedCollator(tokenizer, labelled["dna_barcode"].tolist(),
                                   labelled[[f"{name}_index" for name in ranks]].to_numpy(), group_size=group_size,
                                   random_offset=not tokenizer.align_to_reference, seed=seed + rank)
    with staged_folder(out_dir, overwrite, main_process=rank == 0) as staging:
        args = options.training_arguments(staging,
                                          per_device_train_batch_size=settings.contrastive_batch_size // group_size,
                                          num_train_epochs=settings.contrastive_epochs, max_steps=max_steps or -1,
                                          learning_rate=settings.contrastive_learning_rate, lr_scheduler_type="cosine",
                                          warmup_steps=0.1, weight_decay=0.01, seed=seed)
        rows = [{"row": row} for row in range(len(labelled))]     # the collator looks the barcodes up by row
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collator,
                          processing_class=tokenizer)
        started = time.time()
        train_output = train(trainer, options)
        minutes = (time.time() - started) / 60

        results = {"model": str(model_dir), "ranks": list(ranks), "train_barcodes": len(labelled),
                   "steps": train_output.global_step, "minutes": round(minutes, 1), "world_size": args.world_size,
                   "replicas_in_sync": replicas_in_sync(trainer.model)}
        if trainer.is_world_process_zero():
            # The encoder is the product (AutoModel, embed()); the loss has no weights of its own.
            trainer.model.bert.save_pretrained(str(staging))
            tokenizer.save_pretrained(str(staging))
            results.update({key: value for key, value in probe(staging, data_root).items() if key != "model"})
            (staging / "results.json").write_text(json.dumps(results, indent=2))
            write_model_card(
                staging, trainer.model.config,
                model_name=out_dir.name, source=f"contrastively fine-tuned from `{model_dir}` by "
                                                      "`bioscan5m finetune --objective contrastive`",
                data=f"{len(labelled):,} unique barcodes of BIOSCAN-5M `train` with a {ranks[-1]} label",
                results={"linear probe, species accuracy": ("test", results["linear_probe_species_test"]),
                         "1-NN genus accuracy (open world)": ("test_unseen", results["knn_genus_test_unseen"])},
                base_model=Path(model_dir).name,
                training={"barcodes": describe_frame(tokenizer),
                          "objective": f"supervised contrastive on {', '.join(ranks)} (temperature "
                                       f"{settings.contrastive_temperature}), groups of {group_size} per {ranks[-1]}",
                          "epochs": settings.contrastive_epochs, "steps": train_output.global_step,
                          "batch size": f"{settings.contrastive_batch_size} × {args.world_size} processes",
                          "learning rate": settings.contrastive_learning_rate, "time": f"{minutes:.1f} min"},
            )
    push_result(out_dir, options)
    return results
