"""The README.md model cards written next to saved BarcodeBERT and CLIBD folders: data, protocol, measured results.

The header is ``huggingface_hub``'s ``ModelCardData``: library, licence, tags, the pipeline of the saved head, the
dataset, ``base_model`` for a fine-tuned model, and a ``model-index`` holding every measured result (percent), so
the Hub shows them and ``ModelCard.load(folder).data`` reads them back.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .configuration_barcodebert import BarcodeBertConfig

#: The dataset every card names (its Hub id).
DATASET_ID = "bioscan-ml/BIOSCAN-5M"
#: The pipeline each saved head answers to.
PIPELINE_TAGS = {"BarcodeBertForSequenceClassification": "text-classification", "BarcodeBertForMaskedLM": "fill-mask"}

_USAGE = """```python
from transformers import AutoModel, AutoTokenizer

# With `pip install 'bioscan5m[models]'`, `import bioscan5m.modeling` registers the classes; or trust the shipped code:
tokenizer = AutoTokenizer.from_pretrained("{path}", trust_remote_code=True)
model = AutoModel.from_pretrained("{path}", trust_remote_code=True)
embeddings = model.embed(["AACATTATATTTTATTTTTGG...", ...])  # (n, {size}): the embedding above
```"""

_POOLED = {"mean": "mean of the last hidden state over real tokens",
           "per_position": "last hidden state per k-mer position, projected and L2-normalised, positions concatenated"}

_PROTOCOL = """BIOSCAN-5M protocol as in the BarcodeBERT paper: barcodes are cut to {max_nucleotides} nucleotides and
de-duplicated over the whole release after stripping trailing `N` (first occurrence kept), so every figure is on
unique barcodes. Pretraining uses `pretrain` + `other_heldout`; species accuracy is measured on `test` (closed
world; fine-tuning and linear probe trained on `train`), genus accuracy on `test_unseen` with a cosine 1-NN
probe whose keys are the `train` embeddings (open world)."""


def write_model_card(folder: str | os.PathLike, config: BarcodeBertConfig, source: str,
                     results: dict[str, tuple[str, float]] | None = None, data: str | None = None,
                     training: dict[str, object] | None = None, model_name: str | None = None,
                     base_model: str | None = None) -> Path:
    """Write ``folder/README.md``.

    Args:
        folder: the saved model folder.
        config: the model's configuration (architecture and tokenizer are read from it).
        source: one line on where the weights come from (pretraining run, conversion, fine-tuning).
        results: metric name → (the split it was measured on, accuracy in percent); omitted when None.
        data: the data the model was trained on.
        training: training settings worth reporting (preset, epochs, batch size, learning rate, time).
        model_name: the model's name in the usage example (default: the folder's; give it when writing to a staging
            folder that is renamed afterwards).
        base_model: the model this one was fine-tuned from (a Hub id or a folder name).
    """
    from huggingface_hub import EvalResult, ModelCardData

    folder = Path(folder)
    name = model_name or folder.name
    architecture = (config.architectures or [""])[0]
    card_data = ModelCardData(
        model_name=name, library_name="transformers", license="mit", datasets=[DATASET_ID],
        tags=["dna", "dna-barcodes", "biodiversity", "bioscan-5m", "barcodebert", "custom_code"],
        pipeline_tag=PIPELINE_TAGS.get(architecture, "feature-extraction"), base_model=base_model,
        eval_results=[EvalResult(task_type="text-classification", dataset_type=DATASET_ID, dataset_name="BIOSCAN-5M",
                                 dataset_split=split, metric_type="accuracy", metric_name=metric, metric_value=value)
                      for metric, (split, value) in (results or {}).items()] or None)
    heads = ", ".join(f"{rank} ({count} classes)" for rank, count in config.num_labels_per_rank.items())
    lines = [
        "---",
        card_data.to_yaml(),
        "---",
        "",
        f"# BarcodeBERT {config.k_mer}-{config.num_hidden_layers}-{config.num_attention_heads}",
        "",
        f"A BERT encoder over non-overlapping DNA {config.k_mer}-mers of COI barcodes, {source}.",
        "",
    ]
    facts = {"tokenizer": f"non-overlapping {config.k_mer}-mers, `{config.tokenizer_vocabulary}` vocabulary "
                          f"({config.vocab_size} tokens), up to {config.max_nucleotides} nucleotides",
             "encoder": f"{config.num_hidden_layers} layer{'s' * (config.num_hidden_layers != 1)}, "
                        f"{config.num_attention_heads} heads, hidden {config.hidden_size}, intermediate "
                        f"{config.intermediate_size}",
             "embedding": f"{_POOLED[config.pooling]}, {config.embedding_size} values"}
    if heads:
        facts["classifier heads"] = f"{heads}, on the mean of the last hidden state"
    if data:
        facts["data"] = data
    facts.update({name: str(value) for name, value in (training or {}).items()})
    lines.append(pd.DataFrame({"": list(facts), " ": list(facts.values())}).to_markdown(index=False,
                                                                                        disable_numparse=True))
    lines += ["", "## Usage", "", _USAGE.format(path=name, size=config.embedding_size), "",
              "## Evaluation protocol", "", _PROTOCOL.format(max_nucleotides=config.max_nucleotides), ""]
    lines += ["## Results", ""]
    if results:
        lines.append(pd.DataFrame({"metric": list(results), "split": [split for split, _ in results.values()],
                                   "value": [f"{value:.2f} %" for _, value in results.values()]})
                     .to_markdown(index=False, disable_numparse=True))
    else:
        lines.append("Not measured for this folder.")
    lines += ["", "Made with [bioscan5m](https://github.com/bioscan-ml/BIOSCAN-5M). Cite BIOSCAN-5M "
              "(Gharaee et al., NeurIPS 2024) and BarcodeBERT (Millan Arias et al., 2023).", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


_CLIBD_USAGE = """```python
from transformers import AutoModel, AutoProcessor

# With `pip install 'bioscan5m[models]'`, `import bioscan5m.modeling` registers the classes; or trust the shipped code:
model = AutoModel.from_pretrained("{path}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{path}", trust_remote_code=True)
inputs = processor(images=photos, dna=["AACATTATATTTTATTTTTGG..."], text=["Diptera Cecidomyiidae Asynapta"])
outputs = model(**inputs)   # image_embeds, dna_embeds, text_embeds (L2-normalised, {size} values) and the loss
```"""


def write_clibd_card(folder: str | os.PathLike, config, training: dict[str, object] | None = None,
                     model_name: str | None = None) -> Path:
    """Write ``folder/README.md`` for a saved CLIBD model: what it aligns, how to use it, how it was trained."""
    from huggingface_hub import ModelCardData

    folder = Path(folder)
    name = model_name or folder.name
    card_data = ModelCardData(model_name=name, library_name="transformers", license="mit", datasets=[DATASET_ID],
                              tags=["dna", "dna-barcodes", "biodiversity", "bioscan-5m", "clibd", "clip", "custom_code"],
                              pipeline_tag="feature-extraction")
    fused = ", ".join(config.metadata_features or []) or "none"
    facts = {"image encoder": f"timm `{config.image_model_name}`, {config.image_size} px",
             "DNA encoder": f"BarcodeBERT, {config.dna_config.k_mer}-mers, {config.dna_config.num_hidden_layers} layers",
             "taxonomy encoder": f"BERT, {config.text_config.num_hidden_layers} layers, word-level taxonomy vocabulary",
             "shared space": f"{config.projection_dim} dimensions", "metadata fused into images": fused,
             **{key: str(value) for key, value in (training or {}).items()}}
    lines = ["---", card_data.to_yaml(), "---", "", f"# CLIBD {name}", "",
             "Specimen photographs, DNA barcodes and taxonomy strings (`order family genus species`) aligned in one "
             "embedding space by a symmetric CLIP loss over every pair (CLIBD, trained on BIOSCAN-5M), so a photograph "
             "can be matched against barcodes and taxonomy.", "",
             pd.DataFrame({"": list(facts), " ": list(facts.values())}).to_markdown(index=False, disable_numparse=True),
             "", "## Usage", "", _CLIBD_USAGE.format(path=name, size=config.projection_dim), "",
             "Made with [bioscan5m](https://github.com/bioscan-ml/BIOSCAN-5M). Cite BIOSCAN-5M (Gharaee et al., "
             "NeurIPS 2024) and CLIBD (Gong et al., 2024).", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
