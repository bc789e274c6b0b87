"""Convert a published BarcodeBERT checkpoint (github.com/bioscan-ml/BarcodeBERT) into our classes.

The original model is ``transformers.BertForTokenClassification`` over the BarcodeBERT k-mer vocabulary
(``[MASK]=0, [UNK]=1``, then ``4**k`` k-mers) with a ``4**k``-way ``classifier`` that predicts ``token_id - 2``.
It is published in two forms, both read here:

* the training script's ``torch.save`` files, ``{"model": state_dict, "config": argparse.Namespace, ...}`` (or a
  bare state dict), e.g. the BIOSCAN-5M checkpoints;
* a Hugging Face folder or Hub repo, as ``bioscan-ml/BarcodeBERT``: ``config.json`` (a BERT config) beside
  ``model.safetensors`` or ``pytorch_model.bin``.

A source is a local file or folder, or a Hub repo id (``bioscan-ml/BarcodeBERT``; with ``filename`` one file of a
repo, e.g. a ``.pth`` under ``ckpt/``), fetched with ``huggingface_hub`` at ``revision`` into the Hub cache.

The encoder keys are identical to ours; the k-mer classifier becomes our full-vocabulary ``lm_head``, whose two
special-token rows get zero weights and a very negative bias, so the k-mer logits are unchanged and the softmax over
the vocabulary equals the original's softmax over k-mers.

Safety: ``.pt``/``.pth``/``.bin`` files are read with ``torch.load(weights_only=True)``, which refuses arbitrary
pickled objects (only ``argparse.Namespace`` is allowed besides tensors and containers, for the saved config);
``.safetensors`` state dicts are preferred where a folder has both. No code of a repo is run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from pathlib import Path

import torch

from .configuration_barcodebert import BarcodeBertConfig
from .modeling_barcodebert import BarcodeBertForMaskedLM

#: Bias given to the [MASK]/[UNK] logits, which the original head cannot predict.
SPECIAL_LOGIT_BIAS = -1.0e4
#: The weight files of a Hugging Face folder, in the order they are preferred.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
#: BERT config fields of a Hugging Face folder that carry over (the others are read off the weights).
HF_CONFIG_FIELDS = ("hidden_act", "layer_norm_eps")


def resolve_checkpoint(source: str | os.PathLike, filename: str | None = None,
                       revision: str | None = None) -> Path:
    """The local checkpoint file or Hugging Face folder that ``source`` names: a path, or a Hub repo id whose
    files are downloaded with ``hf_hub_download`` (``filename``: that one file; otherwise the config and the
    weights of a Hugging Face repo)."""
    path = Path(os.path.expanduser(str(source)))
    if path.exists():
        return path / filename if filename else path
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", str(source)):
        raise FileNotFoundError(f"No BarcodeBERT checkpoint at {source} (neither a local path nor a Hub repo id).")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    if filename:
        return Path(hf_hub_download(str(source), filename, revision=revision))
    folder = Path(hf_hub_download(str(source), "config.json", revision=revision)).parent
    for name in HF_WEIGHT_FILES:
        try:
            hf_hub_download(str(source), name, revision=revision)
            return folder
        except EntryNotFoundError:
            continue
    raise FileNotFoundError(f"{source}: the repo has a config.json but none of {', '.join(HF_WEIGHT_FILES)}; "
                            "give the checkpoint's file name (filename=..., --file).")


def refuse_existing_folder(out_dir: str | os.PathLike | None) -> None:
    """A converter writes only into a new or empty folder (hidden staging files aside)."""
    if out_dir is not None and Path(out_dir).exists() and (
            not Path(out_dir).is_dir() or any(not p.name.startswith(".") for p in Path(out_dir).iterdir())):
        raise FileExistsError(f"{out_dir} already exists; choose a new folder.")


def _load_hf_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and options of a Hugging Face BERT folder (``config.json`` + weights)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder}: no readable config.json ({error}); not a Hugging Face model folder.") from None
    if config.get("model_type") != "bert":
        raise ValueError(f"{folder}/config.json: model_type {config.get('model_type')!r}; a BarcodeBERT "
                         "checkpoint is a BERT model.")
    weights = next((folder / name for name in HF_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise FileNotFoundError(f"{folder}: none of {', '.join(HF_WEIGHT_FILES)} beside config.json.")
    state_dict, _ = load_original_checkpoint(weights)
    options = {"n_heads": config.get("num_attention_heads"),
               **{name: config[name] for name in HF_CONFIG_FIELDS if name in config}}
    return state_dict, options


def load_original_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and the saved training options (empty when the file holds a bare state dict) of a
    checkpoint file or Hugging Face folder."""
    path = Path(path)
    if path.is_dir():
        return _load_hf_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"No BarcodeBERT checkpoint at {path}.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), {}
        except SafetensorError as error:
            raise ValueError(f"{path}: not a readable safetensors file ({error}).") from None
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises UnpicklingError or RuntimeError depending on the content
            raise ValueError(f"{path}: not a weights-only torch checkpoint ({_unpickling_reason(error)}). Only "
                             "tensors, containers and argparse.Namespace are unpickled; re-save it as a state dict "
                             "or safetensors.") from error
    options = {}
    if isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
        saved_config = payload.get("config")
        if not isinstance(saved_config, (argparse.Namespace, dict, type(None))):
            raise ValueError(f"{path}: its 'config' entry is a {type(saved_config).__name__}, expected the training "
                             "options (a dict or argparse.Namespace).")
        options = vars(saved_config) if isinstance(saved_config, argparse.Namespace) else dict(saved_config or {})
        payload = payload["model"]
    if not isinstance(payload, dict) or not all(isinstance(value, torch.Tensor) for value in payload.values()):
        raise ValueError(f"{path}: expected a state dict (or a dict with a 'model' state dict).")
    # Checkpoints saved from DistributedDataParallel prefix every key with "module.".
    return {re.sub(r"^module\.", "", key): value for key, value in payload.items()}, options


def _unpickling_reason(error: Exception) -> str:
    """The one line of torch's several-paragraph ``weights_only`` error that says what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line, following in zip(lines, lines[1:] + [""]):
        if "WeightsUnpickler error:" in line:
            reason = line.partition("WeightsUnpickler error:")[2].strip() or following
            return reason.split(". ")[0].rstrip(".")
    return lines[0] if lines else type(error).__name__


def config_from_state_dict(state_dict: dict[str, torch.Tensor], num_attention_heads: int | None = None,
                           options: dict | None = None) -> BarcodeBertConfig:
    """A :class:`BarcodeBertConfig` matching the original weights; the head count comes from the saved options
    (``n_heads``) or ``num_attention_heads``, since it cannot be read off the weights."""
    options = options or {}
    word_embeddings = state_dict["bert.embeddings.word_embeddings.weight"]
    vocab_size, hidden_size = word_embeddings.shape
    k_mer = round(math.log(vocab_size - 2, 4))
    if 4 ** k_mer + 2 != vocab_size:
        raise ValueError(f"Word-embedding rows ({vocab_size}) are not 4**k + 2: only checkpoints with the "
                         "[MASK]/[UNK] k-mer vocabulary (BarcodeBERT's default, use_unk_token) can be converted.")
    layers = {int(match.group(1)) for key in state_dict if (match := re.match(r"bert\.encoder\.layer\.(\d+)\.", key))}
    heads = num_attention_heads or options.get("n_heads")
    if heads is None:
        raise ValueError("The checkpoint does not record its number of attention heads; pass num_attention_heads "
                         "(the paper models are 4 heads: '4-4-4', '5-4-4', '8-4-4').")
    return BarcodeBertConfig(
        k_mer=k_mer, tokenizer_vocabulary="barcodebert", max_nucleotides=int(options.get("max_len", 660)),
        hidden_size=hidden_size, num_hidden_layers=len(layers), num_attention_heads=int(heads),
        intermediate_size=state_dict["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state_dict["bert.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state_dict["bert.embeddings.token_type_embeddings.weight"].shape[0],
        # The original BertConfig kept pad_token_id=0, i.e. padding_idx on [MASK]; keep it so outputs match.
        pad_token_id=0,
        **{name: options[name] for name in HF_CONFIG_FIELDS if name in options},
    )


def convert_state_dict(state_dict: dict[str, torch.Tensor], config: BarcodeBertConfig) -> dict[str, torch.Tensor]:
    """Original keys → :class:`BarcodeBertForMaskedLM` keys (the encoder keys are unchanged)."""
    converted = {key: value for key, value in state_dict.items()
                 if key.startswith("bert.") and not key.startswith("bert.pooler.")}
    if "classifier.weight" in state_dict:
        weight, bias = state_dict["classifier.weight"], state_dict["classifier.bias"]
        num_kmers = 4 ** config.k_mer
        if weight.shape[0] != num_kmers:
            raise ValueError(f"The classifier predicts {weight.shape[0]} classes, not the {num_kmers} k-mers of "
                             f"k={config.k_mer}; this is not a pretraining checkpoint.")
        special = config.vocab_size - num_kmers
        converted["lm_head.weight"] = torch.cat([weight.new_zeros(special, weight.shape[1]), weight])
        converted["lm_head.bias"] = torch.cat([bias.new_full((special,), SPECIAL_LOGIT_BIAS), bias])
    return converted


def convert_barcodebert(checkpoint: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                        num_attention_heads: int | None = None, name: str | None = None,
                        filename: str | None = None, revision: str | None = None) -> BarcodeBertForMaskedLM:
    """Load a published BarcodeBERT checkpoint as :class:`BarcodeBertForMaskedLM`; with ``out_dir`` (a new or
    empty folder), save it there together with its tokenizer, code and model card, ready for
    ``AutoModel.from_pretrained(out_dir)``.

    Args:
        checkpoint: a checkpoint file, a Hugging Face folder, or a Hub repo id (e.g. ``bioscan-ml/BarcodeBERT``).
        filename / revision: for a Hub repo, one file of it (e.g. a ``.pth`` checkpoint) and the revision.
        num_attention_heads: the head count, for checkpoints that do not record it.
        name: the model's name in the card (default: the folder's).
    """
    refuse_existing_folder(out_dir)
    source = f"{checkpoint}{f'/{filename}' if filename else ''}{f'@{revision}' if revision else ''}"
    state_dict, options = load_original_checkpoint(resolve_checkpoint(checkpoint, filename, revision))
    if "bert.embeddings.word_embeddings.weight" not in state_dict:
        raise ValueError(f"{source}: no 'bert.embeddings.word_embeddings.weight'; not a BarcodeBERT checkpoint.")
    config = config_from_state_dict(state_dict, num_attention_heads, options)
    model = BarcodeBertForMaskedLM(config)
    weights = convert_state_dict(state_dict, config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [key for key in missing if not key.startswith("lm_head.")]
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not fit the architecture: missing {missing}, "
                         f"unexpected {unexpected}.")
    model.eval()
    if out_dir is not None:
        from ..tokenization.tokenization_kmer import KmerTokenizerFast
        from .model_card import write_model_card

        model.save_pretrained(out_dir)
        KmerTokenizerFast(k=config.k_mer, vocabulary="barcodebert",
                          max_nucleotides=config.max_nucleotides).save_pretrained(out_dir)
        write_model_card(out_dir, config, source=f"converted from the published BarcodeBERT checkpoint `{source}`",
                         results=None, model_name=name)
    return model
