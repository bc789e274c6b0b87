"""Adjusted mutual information (plus ARI and NMI) between true labels and cluster ids, for zero-shot clustering.

Load it with ``evaluate.load(path_to_this_folder)`` (offline; the folder stands alone, without bioscan5m) or
``bioscan5m.evaluation.load("ami")``. The scoring itself is in ``clustering_scores.py`` beside this file.
"""

import datasets
import evaluate

from .clustering_scores import check_rank, clustering_agreement, fill_missing

_DESCRIPTION = """Adjusted mutual information between reference labels and predicted cluster ids (scikit-learn,
arithmetic normalisation by default, as in the BIOSCAN-5M zero-shot clustering benchmark), with the adjusted Rand
index and normalised mutual information. Records with a missing reference (None, "", negative index) are left out."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: cluster id per record (integer or text).
    references: true label per record (integer or text); None, "" or a negative index means missing.
    average_method: normaliser of AMI and NMI: "arithmetic" (default), "geometric", "min" or "max".
    rank: optional taxonomic rank of the references; checked and echoed in the result.
Returns:
    ami, ari, nmi, num_references, num_missing
Example:
    >>> ami = evaluate.load("path/to/ami")
    >>> ami.compute(predictions=[0, 0, 1, 1], references=["a", "a", "b", "b"])["ami"]
    1.0
"""

_CITATION = """@article{vinh2010information, title={Information Theoretic Measures for Clusterings Comparison},
author={Vinh, Nguyen Xuan and Epps, Julien and Bailey, James}, journal={JMLR}, volume={11}, year={2010}}"""


class AMI(evaluate.Metric):
    def _info(self):
        integer, text = datasets.Value("int64"), datasets.Value("string")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[datasets.Features({"predictions": p, "references": r})
                      for p in (integer, text) for r in (integer, text)],
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

    def _compute(self, predictions, references, average_method="arithmetic", rank=None):
        check_rank(rank)
        result = clustering_agreement(references, predictions, average_method=average_method)
        return result if rank is None else {"rank": rank, **result}
