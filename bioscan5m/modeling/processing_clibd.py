"""CLIBD processor: the image processor, the taxonomy tokenizer and the DNA tokenizer behind one call.

    processor = AutoProcessor.from_pretrained("runs/clibd", trust_remote_code=True)
    inputs = processor(images=photos, dna=barcodes, text=["Diptera Cecidomyiidae Asynapta"], return_tensors="pt")
    outputs = model(**inputs)          # ClibdModel: image, DNA and text embeddings and the CLIP loss

The taxonomy tokenizer is the processor's ``tokenizer`` (saved at the folder's root, as in CLIP); the DNA tokenizer
is ``dna_tokenizer`` (saved in ``dna_tokenizer/``). The keys returned are ``ClibdModel.forward``'s arguments.

This module imports nothing from ``bioscan5m``: it is copied next to saved models and must run on its own.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from transformers import AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_clibd import ClibdImageProcessor

#: Where a saved CLIBD folder keeps its DNA tokenizer (the processor attribute's name, as transformers saves it).
DNA_TOKENIZER_SUBFOLDER = "dna_tokenizer"

class ClibdProcessor(ProcessorMixin):
    r"""Prepares photographs (``ClibdImageProcessor``), DNA barcodes (the BarcodeBERT k-mer tokenizer) and taxonomy
    strings (the taxonomy tokenizer) for ``ClibdModel``.

    Args:
        image_processor: a ``ClibdImageProcessor``.
        tokenizer: the taxonomy tokenizer (a word-level fast tokenizer over taxon names).
        dna_tokenizer: the DNA tokenizer of the model's BarcodeBERT tower.
    """

    def __init__(self, image_processor, tokenizer, dna_tokenizer):
        super().__init__(image_processor, tokenizer, dna_tokenizer)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        if push_to_hub:
            raise ValueError("Use processor.push_to_hub(repo_id): save_pretrained(push_to_hub=True) would upload the "
                             "tokenizer configs before they are final.")
        files = super().save_pretrained(save_directory, **kwargs)
        # transformers also writes the processor's auto_map into each tokenizer's config: the taxonomy tokenizer must
        # keep loading with plain AutoTokenizer (no remote code), and dna_tokenizer/ holds no processor code.
        for folder in (Path(save_directory), Path(save_directory) / DNA_TOKENIZER_SUBFOLDER):
            config_path = folder / "tokenizer_config.json"
            config = json.loads(config_path.read_text())
            auto_map = config.get("auto_map", {})
            auto_map.pop("AutoProcessor", None)
            if not auto_map:
                config.pop("auto_map", None)
            config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return files

    @classmethod
    def _resolve_subprocessors(cls, pretrained_model_name_or_path, processor_dict, **kwargs):
        # transformers >= 5.25 loads the parts here; earlier versions call _get_arguments_from_pretrained.
        unused = {key: kwargs.pop(key) for key in ("return_unused_kwargs",) if key in kwargs}
        parts = cls._get_arguments_from_pretrained(pretrained_model_name_or_path, **kwargs)
        processor_dict.update(zip(("image_processor", "tokenizer", "dna_tokenizer"), parts))
        return processor_dict, unused

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # The image processor is this model's own class, so it loads without an Auto mapping. Loaded as remote code
        # (package not installed), the code saved with the model is trusted (the DNA tokenizer's, and the model config
        # AutoTokenizer reads), and nothing more.
        kwargs.pop("trust_remote_code", None)
        remote = cls.__module__.startswith("transformers_modules")
        image_processor = ClibdImageProcessor.from_pretrained(pretrained_model_name_or_path, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, trust_remote_code=remote, **kwargs)
        subfolder = "/".join(part for part in (kwargs.pop("subfolder", ""), DNA_TOKENIZER_SUBFOLDER) if part)
        # A local folder is opened directly: remote code is looked up beside tokenizer_config.json, not in subfolders.
        local = os.path.join(str(pretrained_model_name_or_path), subfolder)
        source = dict(pretrained_model_name_or_path=local) if os.path.isdir(local) else dict(
            pretrained_model_name_or_path=pretrained_model_name_or_path, subfolder=subfolder)
        dna_tokenizer = AutoTokenizer.from_pretrained(**source, trust_remote_code=remote, **kwargs)
        return [image_processor, tokenizer, dna_tokenizer]

    def __call__(self, images=None, text=None, dna=None, latitude=None, longitude=None, size=None,
                 return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Model inputs for whichever of ``images``, ``dna`` (barcodes) and ``text`` (taxonomy strings) are given.

        ``latitude``/``longitude``/``size`` (one value per image, None where unknown) are passed through as float
        tensors for a model that fuses collection site or specimen size into its image embedding.

        Returns a ``BatchFeature`` with ``pixel_values``, ``dna_input_ids``/``dna_attention_mask`` and
        ``text_input_ids``/``text_attention_mask``, as given.
        """
        if images is None and dna is None and text is None:
            raise ValueError("Give at least one of images, dna or text.")
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}; ClibdProcessor takes images, dna, text, "
                            "latitude, longitude, size and return_tensors.")
        data = {}
        if images is not None:
            data["pixel_values"] = self.image_processor(images, return_tensors="pt")["pixel_values"]
            count = data["pixel_values"].shape[0]
            for name, values in (("latitude", latitude), ("longitude", longitude), ("size", size)):
                if values is not None:
                    data[name] = _floats(values, count, name)
        if dna is not None:
            encoded = self.dna_tokenizer([dna] if isinstance(dna, str) else list(dna), padding=True, truncation=True,
                                         return_tensors="pt")
            data["dna_input_ids"], data["dna_attention_mask"] = encoded["input_ids"], encoded["attention_mask"]
        if text is not None:
            # Truncated at the taxonomy tokenizer's model_max_length, which holds four ranks and the special tokens.
            encoded = self.tokenizer([text] if isinstance(text, str) else list(text), padding=True, truncation=True,
                                     return_tensors="pt")
            data["text_input_ids"], data["text_attention_mask"] = encoded["input_ids"], encoded["attention_mask"]
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["pixel_values", "dna_input_ids", "dna_attention_mask", "text_input_ids", "text_attention_mask"]


def _floats(values, count: int, name: str) -> torch.Tensor:
    values = [values] if isinstance(values, (int, float)) or values is None else list(values)
    if len(values) != count:
        raise ValueError(f"{name} has {len(values)} values for {count} images.")
    return torch.tensor([math.nan if value is None else float(value) for value in values], dtype=torch.float32)


# save_pretrained copies this file (and its relative imports) next to processor_config.json and records it in auto_map.
ClibdProcessor.register_for_auto_class("AutoProcessor")
