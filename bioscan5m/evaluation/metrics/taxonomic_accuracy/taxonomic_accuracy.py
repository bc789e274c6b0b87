"""Taxonomic accuracy: micro and macro top-k accuracy at one rank, as scored for BIOSCAN-5M (CLIBD, BarcodeBERT).

Load it with ``evaluate.load(path_to_this_folder)`` (offline; the folder stands alone, without bioscan5m) or
``bioscan5m.evaluation.load("taxonomic_accuracy")``. The scoring itself is in ``accuracy_scores.py`` beside this file.
"""

import datasets
import evaluate

from .accuracy_scores import fill_missing, grouped_topk_accuracy, topk_accuracy

_DESCRIPTION = """Top-k accuracy of taxonomic label predictions at one rank. Micro accuracy is the fraction of
references whose label is among the first k predictions; macro accuracy averages each class's recall over the
classes present in the references (CLIBD's definition). With ``groups`` (e.g. seen/unseen) every score is given
per group plus the harmonic mean over the groups. Missing references (None, "", negative index) are left out."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: a label per reference, or a ranked list of labels per reference (best first) for top-k.
    references: the true labels (text or integer); None, "" or a negative index means missing.
    rank: the taxonomic rank scored (phylum, class, order, family, subfamily, genus, species, dna_bin).
    top_k: k values to score (default [1]); needs at least max(top_k) ranked predictions.
    groups: optional group name per reference, e.g. "seen"/"unseen"; adds per-group scores and harmonic means.
    per_class: include each class's top-1 recall (default True).
Returns:
    micro_top{k}, macro_top{k}, per_class_top1, num_references, num_classes, num_missing
    (with groups: one such dict per group and harmonic_mean_{micro,macro}_top{k}).
Example:
    >>> acc = evaluate.load("path/to/taxonomic_accuracy")
    >>> acc.compute(predictions=["Aedes", "Culex"], references=["Aedes", "Aedes"], rank="genus")["micro_top1"]
    0.5
"""

_CITATION = """@inproceedings{gong2025clibd, title={{CLIBD}: Bridging Vision and Genomics for Biodiversity
Monitoring at Scale}, author={Gong, ZeMing and others}, booktitle={ICLR}, year={2025}}"""


def _features(prediction, reference):
    return datasets.Features({"predictions": prediction, "references": reference})


class TaxonomicAccuracy(evaluate.Metric):
    def _info(self):
        integer, text = datasets.Value("int64"), datasets.Value("string")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                _features(integer, integer),
                _features(datasets.Sequence(integer), integer),
                _features(text, text),
                _features(datasets.Sequence(text), text),
            ],
        )

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of predictions and references; a ``None`` reference is missing, even the first one.
        """
        return super().add_batch(predictions=predictions, references=fill_missing(references, predictions),
                                 **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one prediction and its reference; a ``None`` reference is missing.
        """
        return super().add(prediction=prediction, reference=fill_missing([reference], [prediction])[0], **kwargs)

    def _compute(self, predictions, references, rank=None, top_k=(1,), groups=None, per_class=True):
        if groups is not None:
            return grouped_topk_accuracy(predictions, references, groups, top_k=top_k, rank=rank, per_class=per_class)
        return topk_accuracy(predictions, references, top_k=top_k, rank=rank, per_class=per_class)
