"""The README.md model card written next to every saved BarcodeBERT folder: data, protocol, measured results."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .configuration_barcodebert import BarcodeBertConfig

_USAGE = """```python
from transformers import AutoModel, AutoTokenizer

# With `pip install bioscan5m`, `import bioscan5m.modeling` registers the classes; without it, trust the shipped code:
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
                     results: dict[str, float] | None = None, data: str | None = None,
                     training: dict[str, object] | None = None, model_name: str | None = None) -> Path:
    """Write ``folder/README.md``.

    Args:
        folder: the saved model folder.
        config: the model's configuration (architecture and tokenizer are read from it).
        source: one line on where the weights come from (pretraining run, conversion, fine-tuning).
        results: metric name → value in percent, as measured; omitted from the card when None.
        data: the data the model was trained on.
        training: training settings worth reporting (preset, epochs, batch size, learning rate, time).
        model_name: the model's name in the usage example (default: the folder's; give it when writing to a staging
            folder that is renamed afterwards).
    """
    folder = Path(folder)
    heads = ", ".join(f"{rank} ({count} classes)" for rank, count in config.num_labels_per_rank.items())
    lines = [
        "---",
        "library_name: transformers",
        "license: mit",
        "tags: [dna, dna-barcodes, biodiversity, bioscan-5m, barcodebert, custom_code]",
        "pipeline_tag: feature-extraction",
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
    lines += ["", "## Usage", "", _USAGE.format(path=model_name or folder.name, size=config.embedding_size), "",
              "## Evaluation protocol", "", _PROTOCOL.format(max_nucleotides=config.max_nucleotides), ""]
    lines += ["## Results", ""]
    if results:
        lines.append(pd.DataFrame({"metric": list(results), "value": [f"{v:.2f} %" for v in results.values()]})
                     .to_markdown(index=False, disable_numparse=True))
    else:
        lines.append("Not measured for this folder.")
    lines += ["", "Made with [bioscan5m](https://github.com/bioscan-ml/BIOSCAN-5M). Cite BIOSCAN-5M "
              "(Gharaee et al., NeurIPS 2024) and BarcodeBERT (Millan Arias et al., 2023).", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
