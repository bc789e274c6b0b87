"""BarcodeBERT: a BERT encoder over non-overlapping DNA k-mers, with masked-LM and taxonomic classification heads.

The encoder is BERT's (embeddings and layers from ``transformers``), so the original BarcodeBERT checkpoints,
which are ``BertForTokenClassification`` state dicts, load into it key for key (see ``convert_barcodebert``).

This module imports nothing from ``bioscan5m``: it is copied next to saved models and must run on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput, MaskedLMOutput
from transformers.models.bert.modeling_bert import BertEmbeddings, BertEncoder, BertLayer, BertSelfAttention
from transformers.utils import ModelOutput
from transformers.utils.output_capturing import capture_outputs

from .configuration_barcodebert import SPECIAL_TOKENS_PER_VOCABULARY, BarcodeBertConfig


#: Every Auto class a saved folder answers to; ``register_for_auto_class`` alone records only the saved class.
AUTO_MAP = {
    "AutoConfig": "configuration_barcodebert.BarcodeBertConfig",
    "AutoModel": "modeling_barcodebert.BarcodeBertModel",
    "AutoModelForMaskedLM": "modeling_barcodebert.BarcodeBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_barcodebert.BarcodeBertForSequenceClassification",
}


def masked_mean(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the positions where ``attention_mask`` is 1 (all positions when it is None)."""
    if attention_mask is None:
        return hidden_states.mean(dim=1)
    weights = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


@dataclass
class BarcodeBertClassifierOutput(ModelOutput):
    """Output of :class:`BarcodeBertForSequenceClassification`.

    Args:
        loss: sum over ranks of the cross-entropy (labels < 0 are ignored), when labels are given.
        logits: logits of the first of ``config.classifier_ranks`` (the only one in the usual single-rank case).
        rank_logits: logits of every rank, keyed by rank name.
        embeddings: the mean-pooled encoder output the heads read.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    rank_logits: dict[str, torch.Tensor] | None = None
    embeddings: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class BarcodeBertPreTrainedModel(PreTrainedModel):
    config_class = BarcodeBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": BertLayer, "attentions": BertSelfAttention}
    # Encoders are routinely loaded from an MLM or a fine-tuned classifier folder (embeddings, 1-NN probes), and
    # classifiers from an MLM folder: the heads they do not have are expected to go unused.
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\.", r"^classifiers\."]

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BertEmbeddings):
            # Buffers are not in the checkpoint; recreate them when weights are initialised on the meta device.
            module.position_ids.copy_(torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            module.token_type_ids.zero_()

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


class BarcodeBertModel(BarcodeBertPreTrainedModel):
    """The BarcodeBERT encoder; ``embed`` turns barcodes into one vector each (``pool`` says how)."""

    def __init__(self, config: BarcodeBertConfig):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        if config.pooling == "per_position":
            self.per_position_projection = nn.Linear(config.hidden_size, config.per_position_size)
        self._kmer_tokenizer = None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    @capture_outputs
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, **kwargs) -> BaseModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        embedding_output = self.embeddings(input_ids=input_ids, position_ids=position_ids,
                                           token_type_ids=token_type_ids, inputs_embeds=inputs_embeds)
        encoder_mask = create_bidirectional_mask(config=self.config, inputs_embeds=embedding_output,
                                                 attention_mask=attention_mask)
        encoder_output = self.encoder(embedding_output, attention_mask=encoder_mask, **kwargs)
        return BaseModelOutput(last_hidden_state=encoder_output.last_hidden_state)

    def pool(self, last_hidden_state: torch.Tensor, input_ids: torch.Tensor,
             attention_mask: torch.Tensor | None) -> torch.Tensor:
        """One vector per barcode from its token states, as ``config.pooling`` says: ``(batch, embedding_size)``.

        ``"mean"`` averages the states where ``attention_mask`` is 1. ``"per_position"`` keeps what a mean loses,
        which gene positions agree between two barcodes: it is to the mean what counting the identical bases of
        two aligned barcodes is to comparing their k-mer counts. Positions that hold no k-mer (no bases there:
        [UNK] for N, padding, special tokens) are zeros, so that missing data agrees with nothing.
        """
        if self.config.pooling == "mean":
            return masked_mean(last_hidden_state, attention_mask)
        positions = last_hidden_state.shape[1]
        if positions > self.config.max_tokens:
            raise ValueError(f"per-position pooling takes at most {self.config.max_tokens} tokens, got {positions}.")
        holds_kmer = input_ids >= SPECIAL_TOKENS_PER_VOCABULARY[self.config.tokenizer_vocabulary]
        if attention_mask is not None:
            holds_kmer = holds_kmer & attention_mask.bool()
        states = nn.functional.normalize(self.per_position_projection(last_hidden_state), dim=-1)
        states = states * holds_kmer.unsqueeze(-1).to(states.dtype)
        states = nn.functional.pad(states, (0, 0, 0, self.config.max_tokens - positions))
        return states.flatten(1)

    @property
    def tokenizer(self):
        """The k-mer tokenizer saved beside the weights, loaded on first use (or the one assigned here)."""
        if self._kmer_tokenizer is None:
            from transformers import AutoTokenizer

            folder = self.config.name_or_path
            if not folder:
                raise ValueError("This BarcodeBERT model was not loaded from a folder, so it has no tokenizer: assign "
                                 "one with `model.tokenizer = KmerTokenizerFast(k=..., vocabulary=...)`.")
            # Loaded as remote code (package not installed): trust the tokenizer code from the same folder, no more.
            remote = type(self).__module__.startswith("transformers_modules")
            self._kmer_tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
        return self._kmer_tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer):
        self._kmer_tokenizer = tokenizer

    @torch.inference_mode()
    def embed(self, sequences: list[str], batch_size: int = 256, return_numpy: bool = False,
              progress: bool = False, reading_frames: int = 1) -> torch.Tensor | np.ndarray:
        """One vector per barcode (``embedding_size`` values): the last hidden state pooled by ``pool``.

        Sequences are batched in order of length, so that little compute goes to padding, and the result is
        returned in input order. The model is put in eval mode.

        Args:
            sequences: DNA barcodes (any case; see the tokenizer for N, IUPAC codes and gaps).
            batch_size: sequences per forward pass.
            return_numpy: return a float32 ``numpy`` array instead of a tensor on the model's device.
            progress: show a tqdm progress bar.
            reading_frames: average the vectors of the barcode read from its first ``reading_frames`` start
                offsets (1 to ``k_mer``). Non-overlapping k-mers of two barcodes that start one nucleotide apart
                share no tokens; with ``reading_frames=k_mer`` every relative offset is covered, so similarity
                no longer depends on where the barcodes start, at ``reading_frames`` times the compute. A
                tokenizer that aligns barcodes to the reference (``align_to_reference``) already reads every barcode
                in one frame, and refuses more.
        """
        if isinstance(sequences, str):
            raise ValueError("embed() takes a list of sequences; wrap a single barcode in a list.")
        if not 1 <= reading_frames <= self.config.k_mer:
            raise ValueError(f"reading_frames must be between 1 and k_mer={self.config.k_mer}, not {reading_frames}.")
        if reading_frames > 1:
            if getattr(self.tokenizer, "align_to_reference", False):
                raise ValueError("This model's tokenizer aligns every barcode to the COI-5P reference, so all start "
                                 "offsets would be read in the same frame: use reading_frames=1.")
            frames = [self.embed([sequence[offset:] for sequence in sequences], batch_size=batch_size,
                                 progress=progress) for offset in range(reading_frames)]
            pooled = torch.stack(frames).mean(dim=0)
            return pooled.cpu().numpy() if return_numpy else pooled
        self.eval()
        tokenizer = self.tokenizer
        order = np.argsort([len(sequence) for sequence in sequences], kind="stable")
        batches = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="embedding", unit="batch")
        if self.config.pooling == "per_position" and not getattr(tokenizer, "align_to_reference", False):
            raise ValueError("Per-position pooling compares barcodes position by position, which needs a tokenizer "
                             "that aligns them to the COI-5P reference (align_to_reference=True).")
        pooled = torch.empty((len(order), self.config.embedding_size), device=self.device)
        for start in batches:
            index = order[start:start + batch_size]
            encoded = tokenizer([sequences[i] for i in index], padding=True, truncation=True, return_tensors="pt")
            encoded = {name: tensor.to(self.device) for name, tensor in encoded.items()}
            hidden = self(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
            pooled[torch.as_tensor(index, device=self.device)] = self.pool(hidden, encoded["input_ids"],
                                                                         encoded["attention_mask"]).float()
        return pooled.cpu().numpy() if return_numpy else pooled


class BarcodeBertForMaskedLM(BarcodeBertPreTrainedModel):
    """Encoder plus a linear k-mer prediction head over the whole vocabulary (logit index = token id).

    ``labels`` hold token ids where the loss applies and -100 elsewhere, so both BarcodeBERT's scheme (loss over
    every non-special token) and the standard one (loss over masked tokens only) are a choice of labels.
    """

    def __init__(self, config: BarcodeBertConfig):
        super().__init__(config)
        self.bert = BarcodeBertModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> MaskedLMOutput:
        output = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        logits = self.lm_head(output.last_hidden_state)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), labels.view(-1), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=output.hidden_states,
                              attentions=output.attentions)


class BarcodeBertForSequenceClassification(BarcodeBertPreTrainedModel):
    """Encoder, attention-mask-aware mean pooling, then one linear classifier per taxonomic rank.

    The ranks and their class names come from ``config.classifier_ranks`` and ``config.rank_labels``; without
    them, one head of ``config.num_labels`` classes named by ``config.id2label``, as any transformers classifier
    (``from_pretrained(encoder, num_labels=N)``). ``labels`` is ``(batch,)`` for one rank or ``(batch, n_ranks)``
    in ``classifier_ranks`` order; negative labels (a missing rank) are ignored.
    """

    def __init__(self, config: BarcodeBertConfig):
        super().__init__(config)
        self.bert = BarcodeBertModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        heads = config.num_labels_per_rank or {"label": config.num_labels}
        self.classifiers = nn.ModuleDict({rank: nn.Linear(config.hidden_size, size) for rank, size in heads.items()})
        self.post_init()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> BarcodeBertClassifierOutput:
        output = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        pooled = masked_mean(output.last_hidden_state, attention_mask)
        features = self.dropout(pooled)
        rank_logits = {rank: head(features) for rank, head in self.classifiers.items()}
        loss = None
        if labels is not None:
            labels = labels.view(labels.size(0), -1)
            loss = sum(_rank_loss(logits, labels[:, column]) for column, logits in enumerate(rank_logits.values()))
        return BarcodeBertClassifierOutput(loss=loss, logits=next(iter(rank_logits.values())), rank_logits=rank_logits,
                                           embeddings=pooled, hidden_states=output.hidden_states,
                                           attentions=output.attentions)


@dataclass
class BarcodeBertContrastiveOutput(ModelOutput):
    """Output of :class:`BarcodeBertForContrastiveLearning`.

    Args:
        loss: weighted sum over ``config.contrastive_ranks`` of the supervised contrastive loss, when labels are given.
        rank_losses: each rank's (unweighted, detached) loss, keyed by rank name.
        embeddings: the L2-normalised pooled encoder output, the vectors ``BarcodeBertModel.embed`` returns up
            to normalisation.
    """

    loss: torch.Tensor | None = None
    rank_losses: dict[str, torch.Tensor] | None = None
    embeddings: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class BarcodeBertForContrastiveLearning(BarcodeBertPreTrainedModel):
    """Encoder trained so that the pooled vectors of barcodes of one taxon lie close together.

    The loss is the supervised contrastive loss (Khosla et al. 2020, "SupCon") on the L2-normalised pooled
    embeddings (``BarcodeBertModel.pool``), one term per rank of ``config.contrastive_ranks`` (e.g. genus and
    species), weighted by ``config.contrastive_rank_weights``. It shapes exactly the vectors that 1-NN identification, retrieval and
    clustering compare, which a classification head does not. ``labels`` is ``(batch, n_ranks)`` in
    ``contrastive_ranks`` order; negative labels (a missing rank) take part only as negatives. Each process scores
    its own batch, so the batch must hold several barcodes per taxon (``KmerGroupedCollator``).
    """

    def __init__(self, config: BarcodeBertConfig):
        super().__init__(config)
        if not config.contrastive_ranks:
            raise ValueError("BarcodeBertForContrastiveLearning needs config.contrastive_ranks, "
                             "e.g. ['genus', 'species'].")
        self.bert = BarcodeBertModel(config)
        self.post_init()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs) -> BarcodeBertContrastiveOutput:
        output = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        embeddings = nn.functional.normalize(self.bert.pool(output.last_hidden_state, input_ids, attention_mask),
                                            dim=-1)
        loss, rank_losses = None, None
        if labels is not None:
            labels = labels.view(labels.size(0), -1)
            rank_losses = {rank: supervised_contrastive_loss(embeddings, labels[:, column],
                                                             self.config.contrastive_temperature)
                           for column, rank in enumerate(self.config.contrastive_ranks)}
            loss = sum(weight * rank_loss for weight, rank_loss in
                       zip(self.config.contrastive_rank_weights, rank_losses.values()))
            rank_losses = {rank: value.detach() for rank, value in rank_losses.items()}
        return BarcodeBertContrastiveOutput(loss=loss, rank_losses=rank_losses, embeddings=embeddings,
                                            hidden_states=output.hidden_states, attentions=output.attentions)


def supervised_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SupCon's L_out: for each anchor with a label and at least one other barcode of that label in the batch, the
    mean over those positives of -log softmax of their similarity against every other barcode of the batch.

    Args:
        embeddings: ``(batch, dim)``, L2-normalised.
        labels: ``(batch,)`` class indices; negative means unknown (never an anchor or a positive).
    Returns:
        The mean over anchors; zero (not NaN) when the batch has no positive pair.
    """
    logits = embeddings @ embeddings.T / temperature
    self_pairs = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    logits = logits.masked_fill(self_pairs, torch.finfo(logits.dtype).min)
    log_probabilities = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0) & ~self_pairs
    anchors = positives.any(dim=1)
    if not anchors.any():
        return embeddings.sum() * 0.0
    positive_log_probabilities = log_probabilities.masked_fill(~positives, 0.0).sum(dim=1)
    return -(positive_log_probabilities[anchors] / positives.sum(dim=1)[anchors]).mean()


def _rank_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the records that have this rank; zero (not NaN) when none in the batch has it."""
    known = labels >= 0
    if not known.any():
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits[known], labels[known])


__all__ = ["BarcodeBertPreTrainedModel", "BarcodeBertModel", "BarcodeBertForMaskedLM",
           "BarcodeBertForSequenceClassification", "BarcodeBertClassifierOutput", "BarcodeBertForContrastiveLearning",
           "BarcodeBertContrastiveOutput", "masked_mean", "supervised_contrastive_loss"]

# save_pretrained copies this file (and the config's) next to the weights when the class knows its Auto class.
BarcodeBertModel.register_for_auto_class("AutoModel")
BarcodeBertForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
BarcodeBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
