"""Convert a published CLIBD checkpoint (github.com/bioscan-ml/clibd, Hub ``bioscan-ml/clibd``) into ``ClibdModel``.

The published files are bare ``state_dict``s of the original ``SimpleCLIP`` (``torch.save`` after training, e.g.
``ckpt/bioscan_clip/ver_1_0/bioscan_5m/image_dna_text_4gpu/best.pth``), with three towers:

* image: timm ``vit_base_patch16_224`` (``image_encoder.base_image_encoder.*``; ``lora_vit`` in older files) whose
  classifier became a 768→768 ``head``, and rank-4 LoRA adapters on the query and value parts of every block's
  ``qkv`` (``linear_a_q``/``linear_b_q``, ``linear_a_v``/``linear_b_v``, scale 1), merged here into ``qkv.weight``;
* DNA: a ``BertForMaskedLM`` over 5-mers (``dna_encoder.base_dna_encoder.*``; ``lora_barcode_bert``) whose decoder
  became a 768→768 projection; its vocabulary is ``<MASK>, <CLS>, <UNK>`` then the 5-mers, ours ``[MASK], [UNK]``
  then the same 5-mers, so the embedding rows are re-ordered (the unused ``<CLS>`` row is dropped) and the ids of
  our BarcodeBERT tokenizer reach the same rows;
* text: prajjwal1/bert-small (``language_encoder.base_language_encoder.*``; ``lora_bert``) and a 512→768 ``proj``,
  over ``"order family genus species"`` tokenized by bert-small's WordPiece tokenizer (20 tokens).

The converted model sets ``original_heads`` (the original's pooling, see ``ClibdConfig``) and ``projection_bias``;
a checkpoint of two towers (``image_dna_4gpu``, ``image_text_4gpu``) converts with ``modalities`` naming them. The
image processor resizes to 256, crops 224 and does not normalise, as the original's evaluation transform.
LoRA adapters on the BERT towers (the zip of LoRA models) are merged the same way.

Differences that remain: the original resizes float pixels and ours uint8 (pixels within 2/255); the
original reads a gap character or a lower-case base as part of an unknown k-mer where our tokenizer drops gaps and
upper-cases first, so such barcodes tokenize differently (the released BIOSCAN-5M barcodes are upper case, without
gaps).

Safety: the checkpoint is read with ``torch.load(weights_only=True)`` (tensors and containers only) or from
safetensors; no code of a repo is run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .configuration_barcodebert import BarcodeBertConfig
from .configuration_clibd import ClibdConfig
from .convert_barcodebert import load_original_checkpoint, refuse_existing_folder, resolve_checkpoint
from .modeling_clibd import ClibdModel

#: The Hub repo of the published checkpoints, and the BIOSCAN-5M image + DNA + text model in it.
CLIBD_REPO = "bioscan-ml/clibd"
CLIBD_5M_CHECKPOINT = "ckpt/bioscan_clip/ver_1_0/bioscan_5m/image_dna_text_4gpu/best.pth"
#: CLIBD's taxonomy-text tokenizer (bert-small's uncased WordPiece vocabulary).
TEXT_TOKENIZER = "prajjwal1/bert-small"
#: Tower prefixes of the original state dict; the older attribute names first.
PREFIXES = {
    "image": ("image_encoder.lora_vit.", "image_encoder.base_image_encoder."),
    "dna": ("dna_encoder.lora_barcode_bert.", "dna_encoder.base_dna_encoder."),
    "text": ("language_encoder.lora_bert.", "language_encoder.base_language_encoder."),
}
#: Original special tokens ahead of the k-mers (<MASK>, <CLS>, <UNK>) and the rows ours keeps, in our order.
ORIGINAL_DNA_SPECIALS = 3
KEPT_SPECIAL_ROWS = (0, 2)  # [MASK], [UNK]
#: Weights the original holds but never uses at inference.
UNUSED = re.compile(r"(^|\.)(position_ids|token_type_ids)$|^cls\.predictions\.bias$|^pooler\.")


def split_towers(state_dict: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The original state dict as ``{"image": ..., "dna": ..., "text": ..., "": rest}`` with the tower prefixes
    removed (``language_encoder.proj.*`` goes under ``"text"`` as ``proj.*``)."""
    towers: dict[str, dict[str, torch.Tensor]] = {"image": {}, "dna": {}, "text": {}, "": {}}
    for key, value in state_dict.items():
        key = re.sub(r"^module\.", "", key)
        tower = next(((name, prefix) for name, prefixes in PREFIXES.items() for prefix in prefixes
                      if key.startswith(prefix)), None)
        if tower is not None:
            towers[tower[0]][key[len(tower[1]):]] = value
        elif key.startswith("language_encoder.proj."):
            towers["text"]["proj." + key.rsplit(".", 1)[1]] = value
        else:
            towers[""][key] = value
    return towers


def merge_lora(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold LoRA adapters into the weights they adapt (``W + B @ A``, scale 1 as in CLIBD).

    timm's ``blocks.N.attn.qkv`` is wrapped as ``qkv.qkv`` with ``linear_[ab]_[qv]`` for the query and value thirds;
    a BERT linear as ``X.w`` with ``X.w_a``/``X.w_b``.
    """
    merged = {}
    for key, value in weights.items():
        if re.search(r"\.(linear_[ab]_[qv]|w_[ab])\.weight$", key):
            continue
        if (match := re.fullmatch(r"(.*\.qkv)\.qkv\.(weight|bias)", key)) is not None:
            outer = match.group(1)
            value = value.clone()
            if match.group(2) == "weight":
                width = value.shape[1]
                if f"{outer}.linear_a_q.weight" in weights:
                    value[:width] += weights[f"{outer}.linear_b_q.weight"] @ weights[f"{outer}.linear_a_q.weight"]
                    value[-width:] += weights[f"{outer}.linear_b_v.weight"] @ weights[f"{outer}.linear_a_v.weight"]
            merged[f"{outer}.{match.group(2)}"] = value
        elif (match := re.fullmatch(r"(.*)\.w\.(weight|bias)", key)) is not None:
            outer = match.group(1)
            if match.group(2) == "weight" and f"{outer}.w_a.weight" in weights:
                value = value + weights[f"{outer}.w_b.weight"] @ weights[f"{outer}.w_a.weight"]
            merged[f"{outer}.{match.group(2)}"] = value
        else:
            merged[key] = value
    return merged


def _layers(weights: dict[str, torch.Tensor], pattern: str) -> int:
    return len({int(match.group(1)) for key in weights if (match := re.match(pattern, key))})


def clibd_config_from_towers(towers: dict[str, dict[str, torch.Tensor]], image_model_name: str,
                             image_model_kwargs: dict | None, dna_attention_heads: int,
                             text_attention_heads: int) -> ClibdConfig:
    """A ``ClibdConfig`` matching the original towers' weights (head counts cannot be read off the weights: BERT-base's
    12 for the DNA tower and bert-small's 8 for the text tower, CLIBD's)."""
    modalities = [name for name in ("image", "dna", "text") if towers[name]]
    if "image" not in modalities:
        raise ValueError("The checkpoint has no image tower (image_encoder.*): not a CLIBD checkpoint.")
    head = towers["image"].get("head.weight")
    if head is None:
        raise ValueError("The image tower has no head.weight (its projection): not a CLIBD checkpoint.")
    config = dict(image_model_name=image_model_name, image_model_kwargs=image_model_kwargs,
                  image_size=int((image_model_kwargs or {}).get("img_size", 224)), projection_dim=int(head.shape[0]),
                  modalities=modalities, projection_bias=True, original_heads=True, learnable_temperature=True,
                  max_logit_scale=1.0e4)
    dna = towers["dna"]
    if dna:
        rows, hidden = dna["bert.embeddings.word_embeddings.weight"].shape
        k = next((size for size in range(1, 13) if 4 ** size + ORIGINAL_DNA_SPECIALS == rows), None)
        if k is None:
            raise ValueError(f"The DNA tower's {rows} embedding rows are not 4**k + 3 (<MASK>, <CLS>, <UNK> and the "
                             "k-mers): not a CLIBD DNA tower.")
        config["dna_config"] = BarcodeBertConfig(
            k_mer=k, tokenizer_vocabulary="barcodebert", max_nucleotides=660, pooling="mean", hidden_size=int(hidden),
            num_hidden_layers=_layers(dna, r"bert\.encoder\.layer\.(\d+)\."), num_attention_heads=dna_attention_heads,
            intermediate_size=int(dna["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]),
            max_position_embeddings=int(dna["bert.embeddings.position_embeddings.weight"].shape[0]),
            type_vocab_size=int(dna["bert.embeddings.token_type_embeddings.weight"].shape[0]), pad_token_id=0)
    text = towers["text"]
    if text:
        rows, hidden = text["embeddings.word_embeddings.weight"].shape
        config["text_config"] = dict(
            vocab_size=int(rows), hidden_size=int(hidden), num_hidden_layers=_layers(text, r"encoder\.layer\.(\d+)\."),
            num_attention_heads=text_attention_heads,
            intermediate_size=int(text["encoder.layer.0.intermediate.dense.weight"].shape[0]),
            max_position_embeddings=int(text["embeddings.position_embeddings.weight"].shape[0]),
            type_vocab_size=int(text["embeddings.token_type_embeddings.weight"].shape[0]), pad_token_id=0)
    return ClibdConfig(**config)


def convert_state_dict(towers: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Original tower weights → ``ClibdModel`` keys (LoRA merged, DNA embedding rows in our vocabulary's order)."""
    converted = {}
    if "logit_scale" in towers[""]:
        converted["logit_scale"] = towers[""]["logit_scale"]
    for key, value in merge_lora(towers["image"]).items():
        converted[("image_projection." + key[len("head."):]) if key.startswith("head.") else
                  ("image_encoder." + key)] = value
    for key, value in merge_lora(towers["dna"]).items():
        if UNUSED.search(key):
            continue
        if key == "bert.embeddings.word_embeddings.weight":
            value = torch.cat([value[list(KEPT_SPECIAL_ROWS)], value[ORIGINAL_DNA_SPECIALS:]])
        for original, ours in (("bert.", "dna_model."), ("cls.predictions.transform.", "dna_head."),
                               ("cls.predictions.decoder.", "dna_projection.")):
            if key.startswith(original):
                converted[ours + key[len(original):]] = value
                break
        else:
            raise ValueError(f"Unexpected DNA tower weight {key!r}: not a CLIBD DNA tower (BertForMaskedLM).")
    for key, value in merge_lora(towers["text"]).items():
        if UNUSED.search(key):
            continue
        ours = ("text_projection." + key[len("proj."):]) if key.startswith("proj.") else ("text_model." + key)
        converted[ours] = value
    return converted


def convert_clibd(checkpoint: str | os.PathLike = CLIBD_REPO, out_dir: str | os.PathLike | None = None,
                  filename: str | None = None, revision: str | None = None, text_tokenizer: str = TEXT_TOKENIZER,
                  image_model_name: str = "vit_base_patch16_224", image_model_kwargs: dict | None = None,
                  dna_attention_heads: int = 12, text_attention_heads: int = 8, name: str | None = None) -> ClibdModel:
    """Load a published CLIBD checkpoint as :class:`ClibdModel`; with ``out_dir`` (a new or empty folder) save it with
    its processor (``AutoProcessor``), code and model card, ready for ``AutoModel.from_pretrained(out_dir,
    trust_remote_code=True)``.

    Args:
        checkpoint: a ``.pth``/``.pt``/``.safetensors`` file, or a Hub repo id (default ``bioscan-ml/clibd``).
        filename / revision: for a Hub repo, the checkpoint file in it (default the BIOSCAN-5M image + DNA + text
            model, ``CLIBD_5M_CHECKPOINT``) and the revision.
        text_tokenizer: a tokenizer folder or Hub id for the text tower (bert-small's WordPiece, CLIBD's); only
            read when the checkpoint has a text tower and ``out_dir`` is given.
        image_model_name / image_model_kwargs: the timm backbone (CLIBD's ``vit_base_patch16_224``).
        dna_attention_heads / text_attention_heads: the towers' head counts (not recorded in the checkpoint).
    """
    refuse_existing_folder(out_dir)
    if filename is None and not Path(os.path.expanduser(str(checkpoint))).exists():
        filename = CLIBD_5M_CHECKPOINT
    source = f"{checkpoint}{f'/{filename}' if filename else ''}{f'@{revision}' if revision else ''}"
    state_dict, _ = load_original_checkpoint(resolve_checkpoint(checkpoint, filename, revision))
    towers = split_towers(state_dict)
    leftover = sorted(set(towers[""]) - {"logit_scale", "logit_bias"})
    if leftover:
        raise ValueError(f"{source}: keys outside CLIBD's towers ({', '.join(leftover[:5])}); not a CLIBD checkpoint.")
    try:
        config = clibd_config_from_towers(towers, image_model_name, image_model_kwargs, dna_attention_heads,
                                          text_attention_heads)
    except KeyError as error:
        raise ValueError(f"{source}: the checkpoint lacks {error}; not a CLIBD checkpoint.") from None
    model = ClibdModel(config)
    fits = f"{source}: the weights do not fit {image_model_name} + BarcodeBERT + BERT"
    try:
        missing, unexpected = model.load_state_dict(convert_state_dict(towers), strict=False)
    except RuntimeError as error:  # shapes that differ
        raise ValueError(f"{fits}: {str(error).splitlines()[-1].strip()}") from None
    absent = {"image": [], "dna": ["dna_model.", "dna_head.", "dna_projection."],
              "text": ["text_model.", "text_projection."]}
    untrained = tuple(prefix for modality in set(absent) - set(config.modalities) for prefix in absent[modality])
    missing = [key for key in missing if not key.startswith(untrained)]
    if missing or unexpected:
        raise ValueError(f"{fits}: missing {missing[:5]}, unexpected {unexpected[:5]}.")
    model.eval()
    if out_dir is not None:
        save_converted(model, out_dir, text_tokenizer, source, name)
    return model


def save_converted(model: ClibdModel, out_dir, text_tokenizer: str, source: str, name: str | None = None) -> Path:
    """The converted model with its processor: the original's evaluation transform (no normalisation), bert-small's
    tokenizer cut at ``text_max_length`` and our 5-mer tokenizer, and a model card naming the source."""
    from ..tokenization.tokenization_kmer import KmerTokenizerFast
    from .image_processing_clibd import ClibdImageProcessor
    from .model_card import write_clibd_card
    from .processing_clibd import ClibdProcessor

    config = model.config
    if "text" in config.modalities:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(text_tokenizer, model_max_length=config.text_max_length)
    else:
        from ..tokenization.tokenization_taxonomy import build_taxonomy_tokenizer

        tokenizer = build_taxonomy_tokenizer([])  # the text tower is absent; the processor still needs a tokenizer
    dna_config = config.dna_config
    dna_tokenizer = KmerTokenizerFast(k=dna_config.k_mer, vocabulary="barcodebert",
                                      max_nucleotides=dna_config.max_nucleotides)
    image_processor = ClibdImageProcessor(size={"shortest_edge": 256}, crop_size={"height": config.image_size,
                                                                                  "width": config.image_size},
                                          do_normalize=False)
    model.save_pretrained(out_dir)
    ClibdProcessor(image_processor, tokenizer, dna_tokenizer).save_pretrained(out_dir)
    write_clibd_card(out_dir, config, model_name=name or Path(out_dir).name,
                     training={"taxonomy encoder": f"BERT, {config.text_config.num_hidden_layers} layers, "
                                                   "bert-small's WordPiece vocabulary",
                               "source": f"converted from the published CLIBD checkpoint `{source}`",
                               "towers": ", ".join(config.modalities)})
    return Path(out_dir)


__all__ = ["convert_clibd", "CLIBD_REPO", "CLIBD_5M_CHECKPOINT", "TEXT_TOKENIZER", "split_towers", "merge_lora",
           "clibd_config_from_towers", "convert_state_dict", "save_converted"]
