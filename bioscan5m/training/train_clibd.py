"""Contrastive training of CLIBD (image + DNA + taxonomy text) on a BIOSCAN-5M release, with the HF ``Trainer``.

As CLIBD on BIOSCAN-5M: trained on the ``pretrain`` ∪ ``train`` records (every record has an image and a barcode;
``pretrain`` records have partial taxonomy, written ``not_classified``), symmetric CLIP loss over all modality
pairs, AdamW with a one-cycle-like schedule (warm-up then cosine), CLIBD's training augmentation. The same call runs
on one CPU, one GPU or several processes under ``torchrun`` / ``accelerate launch`` (embeddings are gathered across
processes for the loss, see ``loss_clibd``).

    from bioscan5m.training.train_clibd import train_clibd
    train_clibd("~/bioscan", "runs/clibd", dna_model="runs/bb", preset="cpu-small")
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..modeling.configuration_clibd import METADATA_FEATURES, ClibdConfig
from ..modeling.image_processing_clibd import ClibdImageProcessor, train_transform
from ..modeling.model_card import write_clibd_card
from ..modeling.modeling_clibd import ClibdModel
from ..modeling.processing_clibd import ClibdProcessor
from ..staging import check_output, staged_folder
from ..tokenization.tokenization_taxonomy import build_taxonomy_tokenizer, taxonomy_string

#: Columns a training record needs (the rest of the release's columns are dropped before batching).
RECORD_COLUMNS = ("image", "dna_barcode", "order", "family", "genus", "species", "coord-lat", "coord-lon",
                  "image_measurement_value")
#: Sub-folder of the output holding the same model before contrastive training: the no-alignment baseline.
NO_ALIGNMENT_SUBFOLDER = "no_alignment"


@dataclass(frozen=True)
class ClibdPreset:
    """Model sizes and training settings of one named setting."""

    image_model_name: str
    image_model_kwargs: dict = field(default_factory=dict)
    image_size: int = 224
    resize: int = 256
    projection_dim: int = 768
    # DNA encoder when no pretrained BarcodeBERT is given
    dna: dict = field(default_factory=dict)
    text: dict = field(default_factory=dict)
    epochs: float = 20
    batch_size: int = 500
    learning_rate: float = 5e-5     # CLIBD: max_lr 5e-5 per 500 samples
    warmup: float = 0.3             # OneCycleLR pct_start
    weight_decay: float = 0.0

    def config(self, **overrides) -> ClibdConfig:
        return ClibdConfig(image_model_name=self.image_model_name, image_model_kwargs=dict(self.image_model_kwargs),
                           image_size=self.image_size, projection_dim=self.projection_dim, dna_config=dict(self.dna),
                           text_config=dict(self.text), **overrides)

    def image_processor(self) -> ClibdImageProcessor:
        return ClibdImageProcessor(size={"shortest_edge": self.resize},
                                   crop_size={"height": self.image_size, "width": self.image_size})


CLIBD_PRESETS = {
    # The paper: ViT-B/16 (224), BarcodeBERT, bert-small, 768-d, batch 500, 20 epochs (for GPUs).
    "paper": ClibdPreset("vit_base_patch16_224",
                         dna=dict(k_mer=8, hidden_size=768, num_hidden_layers=4, num_attention_heads=4,
                                  intermediate_size=3072),
                         text=dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048,
                                   max_position_embeddings=64)),
    # 2-core CPU: a 6-block ViT-Tiny/16 at 96 pixels, BarcodeBERT cpu-small (k=6, 4x128; the shape of
    # `bioscan5m pretrain --preset cpu-small`, so it can start from one), a 2-layer text BERT, 128-d.
    "cpu-small": ClibdPreset("vit_tiny_patch16_224", image_model_kwargs=dict(depth=6), image_size=96, resize=110,
                             projection_dim=128,
                             dna=dict(k_mer=6, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                      intermediate_size=512),
                             text=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                                       max_position_embeddings=32),
                             epochs=4, batch_size=64, learning_rate=1e-3, warmup=0.1),
    # Tests and demos: a 2-block ViT on 64 pixels, tiny BERTs.
    "tiny": ClibdPreset("vit_tiny_patch16_224", image_model_kwargs=dict(embed_dim=64, depth=2, num_heads=2),
                        image_size=64, resize=72, projection_dim=32,
                        dna=dict(k_mer=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64),
                        text=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                  max_position_embeddings=32),
                        epochs=2, batch_size=32, learning_rate=2e-3, warmup=0.1),
}


def get_clibd_preset(name: str, **overrides) -> ClibdPreset:
    if name not in CLIBD_PRESETS:
        raise ValueError(f"Unknown CLIBD preset {name!r}; choose one of {', '.join(CLIBD_PRESETS)}.")
    return replace(CLIBD_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})


# ---------------------------------------------------------------------------------------------- batching
class ClibdCollator:
    """Dataset records (``image``, ``dna_barcode``, taxonomy, coordinates, size) → one CLIBD batch.

    ``processor`` (a ``ClibdProcessor``) tokenizes DNA and taxonomy and, for evaluation, processes the photographs;
    for training pass ``image_transform``, which maps one PIL image to a normalised tensor (``train_transform(...)``).
    ``modalities`` picks what goes in.
    """

    def __init__(self, processor, image_transform=None, modalities=("image", "dna", "text"), metadata_features=()):
        unknown = set(modalities) - {"image", "dna", "text"}
        if unknown:
            raise ValueError(f"Unknown modalities {sorted(unknown)}; choose from image, dna, text.")
        self.processor, self.image_transform = processor, image_transform
        self.modalities, self.metadata_features = tuple(modalities), tuple(metadata_features)

    def __call__(self, records: list[dict]) -> dict[str, torch.Tensor]:
        inputs = {}
        if "dna" in self.modalities:
            inputs["dna"] = [_record_value(r, "dna_barcode", "DNA barcode") for r in records]
        if "text" in self.modalities:
            inputs["text"] = [taxonomy_string(r) for r in records]
        images = [_record_value(r, "image", "image") for r in records] if "image" in self.modalities else None
        if images is not None and self.image_transform is None:
            inputs["images"] = images
        batch = dict(self.processor(**inputs)) if inputs else {}
        if images is not None:
            if self.image_transform is not None:
                batch["pixel_values"] = torch.stack([self.image_transform(image) for image in images])
            batch.update(metadata_inputs(lambda column: [r.get(column) for r in records], self.metadata_features))
        return batch


def _record_value(record: dict, column: str, what: str):
    value = record.get(column)
    if value is None or (isinstance(value, str) and not value):
        raise ValueError(f"A record has no {what} (column {column!r}); CLIBD needs every modality it trains on. "
                         "Filter such records out, or train without that modality.")
    return value


#: The release columns a CLIBD model fuses into its image embedding, per ``metadata_features`` entry, by argument.
METADATA_COLUMNS = {"geo": {"latitude": "coord-lat", "longitude": "coord-lon"}, "size": {"size": "image_measurement_value"}}


def metadata_inputs(values_of, features) -> dict[str, torch.Tensor]:
    """The ``get_image_features`` arguments of the fused ``features``, from ``values_of(column)``: a release column's
    values for the batch (None or NaN where unknown, as for a user's photograph)."""
    return {argument: _floats(values_of(column))
            for feature in features for argument, column in METADATA_COLUMNS.get(feature, {}).items()}


def _floats(values) -> torch.Tensor:
    return torch.tensor([math.nan if v is None else float(v) for v in values], dtype=torch.float32)


# ---------------------------------------------------------------------------------------------- training
def load_records(data_root, split: str, config: str = "cropped_256", cache_dir=None, max_records: int | None = None,
                 seed: int = 0):
    """The records of ``split`` as a ``datasets.Dataset`` holding only the columns CLIBD uses."""
    import bioscan5m

    dataset = bioscan5m.load_dataset(data_root, config, split=split, cache_dir=cache_dir)
    dataset = dataset.select_columns([c for c in RECORD_COLUMNS if c in dataset.column_names])
    if max_records is not None and max_records < len(dataset):
        dataset = dataset.shuffle(seed=seed).select(range(max_records))
    return dataset


def size_statistics(sizes) -> tuple[float, float]:
    """Mean and std of ``log1p(size)`` over the known sizes."""
    values = np.asarray([s for s in sizes if s is not None and not math.isnan(s)], dtype=float)
    if len(values) < 2:
        raise ValueError("The training records carry no specimen size (image_measurement_value is empty), so the "
                         "'size' metadata feature cannot be used with this data.")
    logs = np.log1p(values)
    return float(logs.mean()), float(max(logs.std(), 1e-6))


def build_model(preset: ClibdPreset, text_tokenizer, dna_model=None, metadata_features=(), train_records=None,
                image_weights: str | None = None, seed: int = 0) -> tuple[ClibdModel, object]:
    """A fresh CLIBD model (DNA encoder from ``dna_model`` when given) and its DNA tokenizer."""
    from transformers import AutoTokenizer

    from ..tokenization import KmerTokenizerFast

    overrides = {"metadata_features": list(metadata_features)}
    if "size" in metadata_features:
        overrides["size_log_mean"], overrides["size_log_std"] = size_statistics(train_records["image_measurement_value"])
    config = preset.config(**overrides)
    config.text_config.vocab_size = len(text_tokenizer)
    config.text_config.pad_token_id = text_tokenizer.pad_token_id
    torch.manual_seed(seed)
    if dna_model is not None:
        model = ClibdModel.from_encoders(config, dna_model=str(dna_model), image_weights=image_weights)
        dna_tokenizer = AutoTokenizer.from_pretrained(str(dna_model))
    else:
        model = ClibdModel.from_encoders(config, image_weights=image_weights)
        dna_tokenizer = KmerTokenizerFast(k=config.dna_config.k_mer, vocabulary=config.dna_config.tokenizer_vocabulary)
    return model, dna_tokenizer


def save_clibd(model: ClibdModel, out_dir, processor: ClibdProcessor) -> Path:
    """Weights, config and code files, and the processor (image processor and taxonomy tokenizer at the top level,
    the DNA tokenizer in ``dna_tokenizer/``)."""
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def train_clibd(data_root, out_dir, config: str = "cropped_256", dna_model=None, preset: str = "cpu-small",
                split: str = "pretrain+train", modalities=("image", "dna", "text"), metadata_features=(),
                freeze: dict[str, int] | None = None, epochs: float | None = None, max_steps: int | None = None,
                batch_size: int | None = None, learning_rate: float | None = None, max_records: int | None = None,
                augment: bool = True, image_weights: str | None = None, save_no_alignment: bool = True,
                num_workers: int = 0, cache_dir=None, seed: int = 0, overwrite: bool = False,
                **training_args) -> dict:
    """Train CLIBD contrastively and save it (model, processors, code, ``training.json``).

    Args:
        data_root: a BIOSCAN-5M release root with images (e.g. the synthetic sample).
        out_dir: the model folder to write; ``out_dir/no_alignment`` gets the same model before training. An
            existing folder is refused unless ``overwrite``; the folder appears only once training is saved.
        config: the image package (``cropped_256`` as CLIBD, or another).
        dna_model: a pretrained BarcodeBERT folder to start the DNA encoder from (else a fresh preset-sized one).
        preset: ``paper``, ``cpu-small`` or ``tiny`` (model sizes, epochs, batch size, learning rate).
        split: the training records (CLIBD: ``pretrain+train``).
        modalities: which modalities to align (``image``, ``dna``, ``text``; at least two).
        metadata_features: ``geo`` and/or ``size`` fused into the image embedding.
        freeze: encoder -> number of its last blocks left trainable (0: fully frozen), e.g. ``{"dna": 0}``.
        epochs, max_steps, batch_size, learning_rate: override the preset.
        max_records: use a random subset of this many training records (quick runs).
        augment: CLIBD's training augmentation (off: the evaluation transform).
        image_weights: ``"timm"`` (pretrained timm weights, needs the Hub) or a local ``.safetensors`` file.
        **training_args: any ``TrainingArguments`` field, over the preset's (see
            :mod:`bioscan5m.training.trainer_runs`).
    Returns:
        the training summary (also written to ``out_dir/training.json``).
    """
    from transformers import Trainer

    from .trainer_runs import push_result, replicas_in_sync, run_options, train

    modalities = tuple(modalities)
    if len(set(modalities)) < 2:
        raise ValueError(f"Contrastive training needs at least two modalities; got {modalities}.")
    unknown = [f for f in metadata_features if f not in METADATA_FEATURES]
    if unknown:
        raise ValueError(f"Unknown metadata feature(s) {unknown}; choose from {', '.join(METADATA_FEATURES)}.")
    if metadata_features and "image" not in modalities:
        raise ValueError("Metadata features are fused into the image embedding; they need the image modality.")
    if not augment and "image" not in modalities:
        raise ValueError("augment=False (--no-augment) changes the image transform, and no image is trained.")
    for encoder, trainable_layers in (freeze or {}).items():
        if encoder not in modalities:
            raise ValueError(f"freeze {encoder!r}: not one of the modalities trained ({', '.join(modalities)}).")
        if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int) or trainable_layers < 0:
            raise ValueError(f"freeze {encoder}:{trainable_layers}: the blocks left trainable are a whole number of "
                             "at least 0.")
    settings = get_clibd_preset(preset, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)
    out_dir = check_output(out_dir, overwrite, inputs=(data_root, dna_model, image_weights))  # before any work
    options = run_options(out_dir, training_args, inputs=(data_root, dna_model, image_weights))
    records = load_records(data_root, split, config=config, cache_dir=cache_dir, max_records=max_records, seed=seed)
    text_tokenizer = build_taxonomy_tokenizer([taxonomy_string(r) for r in records.select_columns(
        ["order", "family", "genus", "species"])])
    model, dna_tokenizer = build_model(settings, text_tokenizer, dna_model=dna_model, metadata_features=metadata_features,
                                       train_records=records, image_weights=image_weights, seed=seed)
    for encoder, trainable_layers in (freeze or {}).items():
        model.freeze(encoder, trainable_layers)
    for unused in {"image", "dna", "text"} - set(modalities):
        # Towers outside the loss get no gradient; under DDP trainable-but-unused parameters are an error.
        model.freeze(unused)
        getattr(model, f"{unused}_projection").requires_grad_(False)
    processor = ClibdProcessor(settings.image_processor(), text_tokenizer, dna_tokenizer)
    world_process_zero = int(os.environ.get("RANK", "0")) == 0
    with staged_folder(out_dir, overwrite, main_process=world_process_zero) as staging:
        if save_no_alignment and world_process_zero:
            save_clibd(model, staging / NO_ALIGNMENT_SUBFOLDER, processor)

        collator = ClibdCollator(processor, image_transform=train_transform(processor.image_processor, augment),
                                 modalities=modalities, metadata_features=metadata_features)
        args = options.training_arguments(staging, per_device_train_batch_size=settings.batch_size,
                                          num_train_epochs=settings.epochs, max_steps=max_steps or -1,
                                          learning_rate=settings.learning_rate, weight_decay=settings.weight_decay,
                                          lr_scheduler_type="cosine", warmup_steps=settings.warmup, seed=seed,
                                          dataloader_drop_last=True, dataloader_num_workers=num_workers,
                                          logging_steps=10)
        if len(records) < settings.batch_size * args.world_size:
            raise ValueError(f"{len(records)} training records cannot fill one batch of {settings.batch_size} x "
                             f"{args.world_size} processes; lower the batch size.")
        trainer = Trainer(model=model, args=args, train_dataset=records, data_collator=collator)
        started = time.time()
        result = train(trainer, options)
        seconds = time.time() - started
        summary = {
            "preset": preset, "settings": asdict(settings), "data": str(data_root), "image_package": config,
            "split": split, "records": len(records), "modalities": list(modalities),
            "metadata_features": list(metadata_features), "freeze": dict(freeze or {}),
            "dna_model": None if dna_model is None else str(dna_model), "image_weights": image_weights,
            "augment": augment, "steps": result.global_step, "train_loss": result.training_loss,
            "seconds": round(seconds, 1), "seconds_per_step": round(seconds / max(result.global_step, 1), 3),
            "world_size": args.world_size, "replicas_in_sync": replicas_in_sync(trainer.model),
            "logit_scale": float(model.logit_scale.detach().exp()),
            "log_history": [entry for entry in trainer.state.log_history if "loss" in entry],
        }
        if trainer.is_world_process_zero():
            save_clibd(trainer.model, staging, processor)
            write_clibd_card(staging, model.config, model_name=Path(out_dir).name, training={
                "preset": preset, "records": f"{len(records):,} of `{split}` ({config})", "steps": result.global_step,
                "modalities": ", ".join(modalities), "time": f"{seconds / 60:.1f} min",
                "final training loss": f"{result.training_loss:.4f}"})
            (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; the settings are in training.json
            (staging / "training.json").write_text(json.dumps(summary, indent=2))
    push_result(out_dir, options)
    return summary


__all__ = ["ClibdPreset", "CLIBD_PRESETS", "get_clibd_preset", "ClibdCollator", "train_clibd", "build_model",
           "save_clibd", "load_records", "NO_ALIGNMENT_SUBFOLDER"]
