"""CLIBD configuration: image (timm), DNA (BarcodeBERT) and taxonomy-text (BERT) encoders in one embedding space.

This module imports nothing from ``bioscan5m`` except its sibling modules: it is copied next to saved models.
"""

from __future__ import annotations

import math

from transformers import BertConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_barcodebert import BarcodeBertConfig

#: The three towers.
MODALITIES = ("image", "dna", "text")
#: Optional specimen metadata the image embedding can fuse (see ``ClibdMetadataEncoder``).
METADATA_FEATURES = ("geo", "size")
#: bert-small (prajjwal1/bert-small), CLIBD's text encoder; the vocabulary comes from the taxonomy tokenizer.
BERT_SMALL = dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048,
                  max_position_embeddings=64, vocab_size=1024)


class ClibdConfig(PreTrainedConfig):
    r"""Configuration of :class:`ClibdModel`, a CLIP-style model over specimen images, DNA barcodes and taxonomy text.

    The defaults are the paper's encoders: ``vit_base_patch16_224`` from timm, BarcodeBERT (``dna_config``) and a
    bert-small-sized BERT over taxonomy strings (``text_config``), all projected to 768 dimensions.

    Args:
        image_model_name: a timm model name; it is created with ``pretrained=False`` and ``num_classes=0``
            (weights come from the checkpoint, or from ``ClibdModel.from_encoders``).
        image_model_kwargs: extra ``timm.create_model`` arguments, e.g. ``{"img_size": 112}`` or a tiny ViT's
            ``{"img_size": 64, "embed_dim": 64, "depth": 2, "num_heads": 2}``.
        image_size: side of the square ``pixel_values`` the image encoder takes.
        dna_config: a :class:`BarcodeBertConfig` (or its dict) for the DNA encoder.
        text_config: a ``BertConfig`` (or its dict) for the taxonomy-text encoder; ``vocab_size`` must match the
            taxonomy tokenizer.
        projection_dim: size of the shared embedding space.
        logit_scale_init_value: initial log of the inverse temperature (log(1/0.07), as CLIP and CLIBD).
        learnable_temperature: train the temperature (CLIBD: ``fix_temperature: false``).
        max_logit_scale: the scale is clamped to at most this value (CLIP's 100).
        metadata_features: specimen metadata fused into the image embedding: any of ``"geo"`` (latitude and
            longitude) and ``"size"`` (``image_measurement_value``). Empty: the paper model.
        metadata_hidden_size: width of the metadata MLP.
        size_log_mean, size_log_std: standardisation of ``log1p(size)``, set from the training records.
        modalities: the towers that hold weights (default all three). A model converted from a published
            image+DNA or image+text checkpoint lacks one, which then refuses to embed.
        projection_bias: the three projections have a bias (the published CLIBD checkpoints).
        original_heads: pool as the published CLIBD checkpoints do (see ``convert_clibd``): DNA through BERT's
            masked-LM transform, the projection, a softmax and a mean over a fixed-length input led by ``[MASK]``
            (``dna_config.max_nucleotides`` of bases, padding attended); text as the mean over all
            ``text_max_length`` positions, padding included. Default: masked means, as the training here does.
        text_max_length: the fixed text length ``original_heads`` pads taxonomy strings to (CLIBD's 20).
    """

    model_type = "clibd"
    sub_configs_defaults = {
        "dna_config": BarcodeBertConfig,
        "text_config": SubConfigSpec(BertConfig, init_kwargs=BERT_SMALL),
    }

    image_model_name: str = "vit_base_patch16_224"
    image_model_kwargs: dict | None = None
    image_size: int = 224
    dna_config: dict | BarcodeBertConfig | None = None
    text_config: dict | BertConfig | None = None
    projection_dim: int = 768
    logit_scale_init_value: float = math.log(1 / 0.07)
    learnable_temperature: bool = True
    max_logit_scale: float = 100.0
    metadata_features: list[str] | None = None
    metadata_hidden_size: int = 64
    size_log_mean: float = 0.0
    size_log_std: float = 1.0
    initializer_range: float = 0.02
    modalities: list[str] | None = None
    projection_bias: bool = False
    original_heads: bool = False
    text_max_length: int = 20

    def __post_init__(self, **kwargs):
        # A config.json is data: wrong types are refused here, not met as a TypeError deep in the model.
        for name in ("image_size", "projection_dim", "metadata_hidden_size", "text_max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"ClibdConfig: {name} must be an integer, not {value!r}.")
        for name in ("logit_scale_init_value", "max_logit_scale", "size_log_mean", "size_log_std", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"ClibdConfig: {name} must be a number, not {value!r}.")
        if not isinstance(self.image_model_name, str):
            raise ValueError(f"ClibdConfig: image_model_name must be a timm model name, not {self.image_model_name!r}.")
        if self.metadata_features is not None and (not isinstance(self.metadata_features, (list, tuple))
                                                   or not all(isinstance(f, str) for f in self.metadata_features)):
            raise ValueError(f"ClibdConfig: metadata_features must be a list of names, not {self.metadata_features!r}.")
        if self.image_model_kwargs is not None and not isinstance(self.image_model_kwargs, dict):
            raise ValueError(f"ClibdConfig: image_model_kwargs must be a dict, not {self.image_model_kwargs!r}.")
        self.image_model_kwargs = dict(self.image_model_kwargs or {})
        self.metadata_features = list(self.metadata_features or [])
        unknown = [f for f in self.metadata_features if f not in METADATA_FEATURES]
        if unknown:
            raise ValueError(f"Unknown metadata feature(s) {unknown}; choose from {', '.join(METADATA_FEATURES)}.")
        if len(set(self.metadata_features)) != len(self.metadata_features):
            raise ValueError(f"metadata_features lists a feature twice: {self.metadata_features}.")
        for name in ("projection_bias", "original_heads"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"ClibdConfig: {name} must be true or false, not {getattr(self, name)!r}.")
        self.modalities = list(MODALITIES if self.modalities is None else self.modalities)
        if (not self.modalities or any(m not in MODALITIES for m in self.modalities)
                or len(set(self.modalities)) != len(self.modalities)):
            raise ValueError(f"ClibdConfig: modalities must name towers among {', '.join(MODALITIES)}, each once, not "
                             f"{self.modalities!r}.")
        if self.projection_dim < 1 or self.image_size < 1 or self.text_max_length < 1:
            raise ValueError("projection_dim, image_size and text_max_length must be positive.")
        if self.size_log_std <= 0:
            raise ValueError(f"size_log_std must be positive, not {self.size_log_std}.")
        super().__post_init__(**kwargs)

    @property
    def metadata_input_size(self) -> int:
        """Width of the encoded metadata: geo is a unit vector on the sphere plus a missing flag, size a
        standardised log plus a missing flag."""
        return 4 * ("geo" in self.metadata_features) + 2 * ("size" in self.metadata_features)


__all__ = ["ClibdConfig", "METADATA_FEATURES", "MODALITIES"]

# save_pretrained copies this file (and its relative imports) next to the weights and records it in auto_map.
ClibdConfig.register_for_auto_class()
