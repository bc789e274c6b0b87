"""CLIBD: contrastive image–DNA–taxonomy model (BIOSCAN-CLIP), as a ``transformers`` model.

Three encoders, each followed by a linear projection into one shared space of ``config.projection_dim``:

* image: a timm model by name (``num_classes=0``: its pooled features), e.g. ``vit_base_patch16_224``;
* DNA: :class:`BarcodeBertModel`, mean-pooled over the attention mask;
* text: a BERT over the taxonomy string ``"order family genus species"``, mean-pooled over the attention mask.

Optionally the image embedding also fuses specimen metadata (collection coordinates, specimen size) through a
small MLP added to the projected image features (``config.metadata_features``; zero-initialised, so a model
starts out identical to the plain one). Training uses :class:`ClibdLoss` with a learnable temperature.
Models converted from the published checkpoints pool as the original does (``config.original_heads``).

This module imports nothing from ``bioscan5m`` except its sibling modules: it is copied next to saved models and
must run where ``bioscan5m`` is not installed (``AutoModel.from_pretrained(folder, trust_remote_code=True)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import BertModel, PreTrainedModel
from transformers.models.bert.modeling_bert import BertPredictionHeadTransform
from transformers.utils import ModelOutput

from .configuration_clibd import ClibdConfig
from .loss_clibd import ClibdLoss
from .modeling_barcodebert import BarcodeBertModel, masked_mean

#: Every Auto class a saved folder answers to (``register_for_auto_class`` alone records only the saved class).
AUTO_MAP = {
    "AutoConfig": "configuration_clibd.ClibdConfig",
    "AutoModel": "modeling_clibd.ClibdModel",
    "AutoModelForZeroShotImageClassification": "modeling_clibd.ClibdModel",
}


@dataclass
class ClibdOutput(ModelOutput):
    """Output of :meth:`ClibdModel.forward`.

    Args:
        loss: mean symmetric CLIP loss over the pairs of modalities given (when ``return_loss`` and >= 2 modalities).
        image_embeds, dna_embeds, text_embeds: L2-normalised embeddings, ``(batch, projection_dim)``, or None.
        logit_scale: the inverse temperature used (exponentiated, clamped).
        pair_losses: each modality pair's loss, e.g. ``{"image-dna": ...}`` (detached).
        logits_per_image, logits_per_text: scaled image–text similarities, ``(images, texts)`` and its transpose,
            when both are given (CLIP's outputs, which transformers' zero-shot image classification reads).
    """

    loss: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    dna_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None
    pair_losses: dict[str, torch.Tensor] | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None


def create_image_encoder(config: ClibdConfig) -> nn.Module:
    """The timm backbone named by ``config.image_model_name``, headless (pooled features), randomly initialised."""
    try:
        import timm
    except ImportError as error:  # pragma: no cover - timm comes with the models extra
        raise ImportError("CLIBD's image encoder needs timm: pip install 'bioscan5m[models]'") from error
    kwargs = dict(config.image_model_kwargs)
    if "img_size" not in kwargs and _takes_img_size(config.image_model_name):
        kwargs["img_size"] = config.image_size
    try:
        return timm.create_model(config.image_model_name, pretrained=False, num_classes=0, **kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise ValueError(f"timm has no model {config.image_model_name!r} (see timm.list_models()).") from error
        raise


def _takes_img_size(name: str) -> bool:
    return any(part in name for part in ("vit", "deit", "eva", "beit", "swin", "mixer"))


class ClibdMetadataEncoder(nn.Module):
    """Encodes collection coordinates and specimen size into the shared space, to be added to image features.

    * geo: latitude/longitude (degrees) as the unit vector on the sphere (no seam at ±180°), plus a missing flag;
    * size: ``(log1p(size) - mean) / std``, plus a missing flag.

    Missing values are NaN; they encode as zeros with the flag set.
    """

    def __init__(self, config: ClibdConfig):
        super().__init__()
        self.features = tuple(config.metadata_features)
        self.size_log_mean = config.size_log_mean
        self.size_log_std = config.size_log_std
        self.mlp = nn.Sequential(nn.Linear(config.metadata_input_size, config.metadata_hidden_size), nn.GELU(),
                                 nn.Linear(config.metadata_hidden_size, config.projection_dim))
        # How ClibdPreTrainedModel._init_weights sets each layer (it reaches layers, not this container).
        self.mlp[0]._clibd_init, self.mlp[2]._clibd_init = "normal", "zeros"

    def encode(self, latitude=None, longitude=None, size=None, batch_size: int | None = None,
               device=None) -> torch.Tensor:
        columns = []
        if "geo" in self.features:
            if latitude is None or longitude is None:
                raise ValueError("This CLIBD model fuses geography: pass latitude and longitude (degrees; NaN where "
                                 "unknown) with the images.")
            lat = _column(latitude, batch_size, device, "latitude")
            lon = _column(longitude, batch_size, device, "longitude")
            if ((lat.abs() > 90) | (lon.abs() > 180)).any():
                raise ValueError("latitude must lie in [-90, 90] and longitude in [-180, 180] degrees.")
            missing = torch.isnan(lat) | torch.isnan(lon)
            phi, lam = torch.deg2rad(torch.nan_to_num(lat)), torch.deg2rad(torch.nan_to_num(lon))
            unit = torch.stack([phi.cos() * lam.cos(), phi.cos() * lam.sin(), phi.sin()], dim=-1)
            columns += [unit * (~missing).unsqueeze(-1), missing.unsqueeze(-1).float()]
        if "size" in self.features:
            if size is None:
                raise ValueError("This CLIBD model fuses specimen size: pass size (image_measurement_value; NaN where "
                                 "unknown) with the images.")
            value = _column(size, batch_size, device, "size")
            if (value < 0).any():
                raise ValueError("size (image_measurement_value) cannot be negative.")
            missing = torch.isnan(value)
            scaled = (torch.log1p(torch.nan_to_num(value)) - self.size_log_mean) / self.size_log_std
            columns += [(scaled * ~missing).unsqueeze(-1), missing.unsqueeze(-1).float()]
        return torch.cat(columns, dim=-1)

    def forward(self, latitude=None, longitude=None, size=None, batch_size=None, device=None) -> torch.Tensor:
        encoded = self.encode(latitude, longitude, size, batch_size=batch_size, device=device)
        return self.mlp(encoded.to(self.mlp[0].weight.dtype))


def _column(values, batch_size: int | None, device, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1)
    if batch_size is not None and tensor.shape[0] != batch_size:
        raise ValueError(f"{name} has {tensor.shape[0]} values for {batch_size} images.")
    return tensor


class ClibdPreTrainedModel(PreTrainedModel):
    config_class = ClibdConfig
    base_model_prefix = "clibd"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module):
        # The BERT encoders are PreTrainedModels and initialise themselves; the timm backbone keeps timm's own
        # initialisation (done when it is created), so only CLIBD's own layers are set here.
        std = self.config.initializer_range
        if isinstance(module, ClibdModel):
            nn.init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, nn.Linear) and getattr(module, "_clibd_init", None) == "normal":
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and getattr(module, "_clibd_init", None) == "zeros":
            # The metadata MLP's output layer: a model with metadata starts out equal to its plain image tower.
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


def _projection(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=bias)
    layer._clibd_init = "normal"
    return layer


class ClibdModel(ClibdPreTrainedModel):
    """Image, DNA and taxonomy-text encoders with projections into one space, as transformers' ``CLIPModel``.

    ``get_image_features`` / ``get_dna_features`` / ``get_text_features`` give one projected vector per input
    (``normalize=True`` for unit length); ``forward`` gives all given modalities' normalised embeddings and the
    contrastive loss over their pairs.
    """

    def __init__(self, config: ClibdConfig):
        super().__init__(config)
        self.image_encoder = create_image_encoder(config)
        self.dna_model = BarcodeBertModel(config.dna_config)
        self.text_model = BertModel(config.text_config, add_pooling_layer=False)
        bias = config.projection_bias
        self.image_projection = _projection(self.image_encoder.num_features, config.projection_dim, bias)
        if config.original_heads:
            # The published models project every token's masked-LM transform, not a pooled vector.
            self.dna_head = BertPredictionHeadTransform(config.dna_config)
            self.dna_head.dense._clibd_init = "normal"
            dna_width = config.dna_config.hidden_size
        else:
            # The DNA tower pools as its own config says (mean, or per gene position): its width is embedding_size.
            self.dna_head = None
            dna_width = config.dna_config.embedding_size
        self.dna_projection = _projection(dna_width, config.projection_dim, bias)
        self.text_projection = _projection(config.text_config.hidden_size, config.projection_dim, bias)
        self.metadata_encoder = ClibdMetadataEncoder(config) if config.metadata_features else None
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)),
                                        requires_grad=config.learnable_temperature)
        self.contrastive_loss = ClibdLoss()
        self.post_init()

    # ------------------------------------------------------------------------------------------ features
    def get_image_features(self, pixel_values: torch.Tensor, latitude=None, longitude=None, size=None,
                           normalize: bool = False) -> torch.Tensor:
        """Projected image features ``(batch, projection_dim)`` from processed ``pixel_values`` ``(batch, 3, H, W)``.

        ``latitude``/``longitude`` (degrees) and ``size`` (``image_measurement_value``) are required when
        ``config.metadata_features`` names them (NaN where unknown) and ignored otherwise.
        """
        self._check_tower("image")
        self._check_pixel_values(pixel_values)
        features = self.image_projection(self.image_encoder(pixel_values.to(self.image_projection.weight.dtype)))
        if self.metadata_encoder is not None:
            features = features + self.metadata_encoder(latitude, longitude, size, batch_size=pixel_values.shape[0],
                                                        device=pixel_values.device)
        return F.normalize(features, dim=-1) if normalize else features

    def get_dna_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                         normalize: bool = False) -> torch.Tensor:
        """Projected DNA features from k-mer token ids (the BarcodeBERT tokenizer saved in ``dna_tokenizer/``)."""
        self._check_tower("dna")
        self._check_tokens(input_ids, attention_mask, self.config.dna_config.vocab_size, "DNA")
        if self.config.original_heads:
            features = self._original_dna_features(input_ids, attention_mask)
        else:
            hidden = self.dna_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            features = self.dna_projection(self.dna_model.pool(hidden, input_ids, attention_mask))
        return F.normalize(features, dim=-1) if normalize else features

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          normalize: bool = False) -> torch.Tensor:
        """Projected features of taxonomy strings, tokenized by the taxonomy tokenizer saved with the model."""
        self._check_tower("text")
        self._check_tokens(input_ids, attention_mask, self.config.text_config.vocab_size, "text")
        if self.config.original_heads:
            # The published models average all text_max_length positions, padding included.
            length = self.config.text_max_length
            input_ids, attention_mask = _fixed_length(input_ids, attention_mask, length,
                                                      self.config.text_config.pad_token_id or 0)
            hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            features = self.text_projection(hidden.mean(dim=1))
        else:
            hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            features = self.text_projection(masked_mean(hidden, attention_mask))
        return F.normalize(features, dim=-1) if normalize else features

    def _original_dna_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The published models' DNA tower: the barcode cut or padded with N to ``max_nucleotides`` (padding is
        the [UNK] k-mer), led by [MASK], read without an attention mask; every token's masked-LM transform is
        projected, softmaxed and averaged."""
        dna_config = self.config.dna_config
        length = dna_config.max_nucleotides // dna_config.k_mer
        unknown = 1  # [UNK] in the BarcodeBERT vocabulary, the id of any k-mer holding an N
        input_ids, _ = _fixed_length(input_ids, attention_mask, length, unknown)
        leading_mask = input_ids.new_zeros((input_ids.shape[0], 1))  # [MASK] is id 0
        hidden = self.dna_model(input_ids=torch.cat([leading_mask, input_ids], dim=1)).last_hidden_state
        return self.dna_projection(self.dna_head(hidden)).softmax(dim=-1).mean(dim=1)

    # ------------------------------------------------------------------------------------------ training
    def forward(self, pixel_values: torch.Tensor | None = None, dna_input_ids: torch.Tensor | None = None,
                dna_attention_mask: torch.Tensor | None = None, text_input_ids: torch.Tensor | None = None,
                text_attention_mask: torch.Tensor | None = None, latitude: torch.Tensor | None = None,
                longitude: torch.Tensor | None = None, size: torch.Tensor | None = None,
                return_loss: bool = True, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **kwargs) -> ClibdOutput:
        """Normalised embeddings of every modality given, and the CLIP loss over their pairs (``return_loss``).

        ``input_ids``/``attention_mask`` are the taxonomy text under CLIP's names, as transformers' pipelines pass it.
        """
        if text_input_ids is None:
            text_input_ids, text_attention_mask = input_ids, attention_mask
        if pixel_values is None and dna_input_ids is None and text_input_ids is None:
            raise ValueError("Give at least one modality: pixel_values, dna_input_ids or text_input_ids.")
        image = None if pixel_values is None else self.get_image_features(
            pixel_values, latitude=latitude, longitude=longitude, size=size, normalize=True)
        dna = None if dna_input_ids is None else self.get_dna_features(dna_input_ids, dna_attention_mask, normalize=True)
        text = None if text_input_ids is None else self.get_text_features(text_input_ids, text_attention_mask,
                                                                           normalize=True)
        scale = self.logit_scale.exp().clamp(max=self.config.max_logit_scale)
        loss = pair_losses = None
        given = [x for x in (image, dna, text) if x is not None]
        # The loss pairs row i of every modality; unpaired inputs (one photo against several taxonomy strings, as in
        # zero-shot classification) have logits but no loss.
        if return_loss and len(given) >= 2 and len({x.shape[0] for x in given}) == 1:
            loss, pair_losses = self.contrastive_loss({"image": image, "dna": dna, "text": text}, scale)
        per_image = None if image is None or text is None else scale * image @ text.T
        return ClibdOutput(loss=loss, image_embeds=image, dna_embeds=dna, text_embeds=text, logit_scale=scale,
                           pair_losses=pair_losses, logits_per_image=per_image,
                           logits_per_text=None if per_image is None else per_image.T)

    # ------------------------------------------------------------------------------------------ helpers
    def freeze(self, encoder: str, trainable_layers: int = 0) -> None:
        """Freeze ``"image"``, ``"dna"`` or ``"text"`` encoder (its projection stays trainable), except its last
        ``trainable_layers`` blocks (partial fine-tuning without LoRA)."""
        module = {"image": self.image_encoder, "dna": self.dna_model, "text": self.text_model}.get(encoder)
        if module is None:
            raise ValueError(f"Unknown encoder {encoder!r}; choose image, dna or text.")
        module.requires_grad_(False)
        if trainable_layers > 0:
            layers = _encoder_layers(module)
            if trainable_layers > len(layers):
                raise ValueError(f"The {encoder} encoder has {len(layers)} blocks; cannot train the last {trainable_layers}.")
            for layer in layers[-trainable_layers:]:
                layer.requires_grad_(True)
            for name in ("norm", "fc_norm", "head_drop"):  # the final norm after the blocks (timm ViTs)
                if isinstance(getattr(module, name, None), nn.Module):
                    getattr(module, name).requires_grad_(True)

    def _check_tower(self, modality: str) -> None:
        if modality not in self.config.modalities:
            raise ValueError(f"This model has no trained {modality} tower (it holds {' and '.join(self.config.modalities)}"
                             f" only, as the checkpoint it was converted from).")

    def _check_pixel_values(self, pixel_values) -> None:
        size = self.config.image_size
        if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
            raise ValueError(f"pixel_values must be a (batch, 3, {size}, {size}) tensor of RGB images, got {shape}; "
                             "prepare images with the model's image processor (AutoImageProcessor).")
        if tuple(pixel_values.shape[-2:]) != (size, size):
            raise ValueError(f"pixel_values are {tuple(pixel_values.shape[-2:])} pixels but this model takes "
                             f"{size}x{size}; prepare images with the model's image processor.")
        if not pixel_values.is_floating_point():
            raise ValueError("pixel_values must be normalised floats, not raw uint8 pixels; use the image processor.")

    @staticmethod
    def _check_tokens(input_ids, attention_mask, vocab_size: int, what: str) -> None:
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise ValueError(f"{what} input_ids must be a (batch, tokens) tensor from the {what} tokenizer.")
        if input_ids.numel() and (int(input_ids.max()) >= vocab_size or int(input_ids.min()) < 0):
            raise ValueError(f"{what} input_ids hold ids outside this model's vocabulary (0..{vocab_size - 1}): "
                             f"were they made by another tokenizer?")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"{what} attention_mask {tuple(attention_mask.shape)} does not match input_ids "
                             f"{tuple(input_ids.shape)}.")

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_encoders(cls, config: ClibdConfig, dna_model=None, image_weights: str | None = None) -> "ClibdModel":
        """A new CLIBD model whose encoders start from pretrained weights.

        Args:
            config: the CLIBD configuration; its ``dna_config`` is replaced by the pretrained model's.
            dna_model: a BarcodeBERT folder (MLM or encoder checkpoint) or a loaded ``BarcodeBertModel``.
            image_weights: ``"timm"`` for timm's pretrained weights of ``image_model_name`` (needs the Hub), or a
                local ``.safetensors`` file holding a timm state dict.
        """
        if dna_model is not None:
            if not isinstance(dna_model, BarcodeBertModel):
                dna_model = BarcodeBertModel.from_pretrained(dna_model)
            config.dna_config = dna_model.config
        model = cls(config)
        if dna_model is not None:
            model.dna_model.load_state_dict(dna_model.state_dict())
        if image_weights is not None:
            model.image_encoder.load_state_dict(_timm_state_dict(config, image_weights), strict=False)
        return model


def _fixed_length(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, length: int,
                  pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids cut or right-padded with ``pad_id`` to ``length`` (masked positions become ``pad_id`` too), and
    the matching attention mask."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    input_ids = input_ids.masked_fill(attention_mask == 0, pad_id)[:, :length]
    attention_mask = attention_mask[:, :length]
    missing = length - input_ids.shape[1]
    if missing > 0:
        input_ids = F.pad(input_ids, (0, missing), value=pad_id)
        attention_mask = F.pad(attention_mask, (0, missing), value=0)
    return input_ids, attention_mask


def _timm_state_dict(config: ClibdConfig, image_weights: str) -> dict:
    if image_weights == "timm":
        import timm

        kwargs = dict(config.image_model_kwargs)
        if "img_size" not in kwargs and _takes_img_size(config.image_model_name):
            kwargs["img_size"] = config.image_size
        return timm.create_model(config.image_model_name, pretrained=True, num_classes=0, **kwargs).state_dict()
    if not str(image_weights).endswith(".safetensors"):
        raise ValueError("image_weights must be 'timm' or a .safetensors file (pickled checkpoints are not loaded).")
    from safetensors.torch import load_file

    return load_file(image_weights)


def _encoder_layers(module: nn.Module) -> list[nn.Module]:
    """The stack of blocks of a timm or BERT encoder, in order."""
    for path in ("blocks", "stages", "encoder.layer", "layers"):
        found = module
        for part in path.split("."):
            found = getattr(found, part, None)
        if isinstance(found, (nn.ModuleList, nn.Sequential)):
            return list(found)
    stages = [child for name, child in module.named_children() if name.startswith("layer") and name[5:].isdigit()]
    if stages:  # timm ResNets: layer1..layer4
        return stages
    raise ValueError(f"Cannot find the blocks of {type(module).__name__} for partial fine-tuning.")


__all__ = ["ClibdPreTrainedModel", "ClibdModel", "ClibdOutput", "ClibdMetadataEncoder", "create_image_encoder"]

# save_pretrained copies this file (and its relative imports) next to the weights.
ClibdModel.register_for_auto_class("AutoModel")
