"""Named model and training settings. ``paper`` is BarcodeBERT 8-4-4 as pretrained for BIOSCAN-5M (for GPUs; barcodes
read from their first base, as in the original); ``cpu-small`` pretrains on the 2-core project machines in 10 to 20
minutes (one epoch, barcodes aligned to the COI-5P reference); ``tiny`` is for tests and demos."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Preset:
    # model
    k_mer: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    tokenizer_vocabulary: str = "barcodebert"
    align_to_reference: bool = False                  # place barcodes in COI-5P coordinates (reference_frame)
    # pretraining
    mlm_scheme: str = "barcodebert"
    pretrain_epochs: float = 35
    pretrain_batch_size: int = 16
    pretrain_learning_rate: float = 1e-4 * 16 / 64   # BarcodeBERT: 1e-4 per 64 samples
    warmup: float = 0.3                               # fraction of steps, like OneCycleLR's pct_start
    # fine-tuning
    finetune_epochs: float = 15
    finetune_batch_size: int = 32
    finetune_learning_rate: float = 5e-5
    # contrastive fine-tuning (epochs count groups: each labelled barcode once as an anchor, with its group)
    contrastive_epochs: float = 10
    contrastive_batch_size: int = 256                 # barcodes per batch, groups included
    contrastive_learning_rate: float = 1e-4
    contrastive_temperature: float = 0.1

    def model_kwargs(self) -> dict:
        names = ("k_mer", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "tokenizer_vocabulary")
        return {name: getattr(self, name) for name in names}

    def as_dict(self) -> dict:
        return asdict(self)


PRESETS = {
    "paper": Preset(k_mer=8, hidden_size=768, num_hidden_layers=4, num_attention_heads=4, intermediate_size=3072),
    # Aligned to the COI-5P reference: one CPU epoch then reaches 53 % masked-token accuracy instead of 6 %, and a
    # 98.0 % linear probe instead of 81.9 % (docs/experiments.md, "Reference alignment").
    "cpu-small": Preset(k_mer=6, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
                        align_to_reference=True,
                        pretrain_epochs=1, pretrain_batch_size=64, pretrain_learning_rate=1e-3, warmup=0.1,
                        finetune_epochs=3, finetune_batch_size=64, finetune_learning_rate=1e-4,
                        contrastive_epochs=1, contrastive_learning_rate=3e-4),
    "tiny": Preset(k_mer=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   pretrain_epochs=1, pretrain_batch_size=16, pretrain_learning_rate=1e-3, warmup=0.1,
                   finetune_epochs=1, finetune_batch_size=16, finetune_learning_rate=1e-3,
                   contrastive_epochs=1, contrastive_batch_size=32, contrastive_learning_rate=1e-3),
}


def get_preset(name: str, **overrides) -> Preset:
    """The named preset with any non-None ``overrides`` applied (e.g. ``k_mer=5``)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")
    return replace(PRESETS[name], **{key: value for key, value in overrides.items() if value is not None})
