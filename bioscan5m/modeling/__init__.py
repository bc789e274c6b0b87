"""Models, registered with the ``transformers`` Auto classes on import.

Each model family sits in its own ``configuration_x.py`` / ``modeling_x.py`` pair that imports nothing else of
ours, so that ``save_pretrained`` can copy those files next to the weights (``trust_remote_code`` loading).
To add a family, import its classes here and append one line to ``_register``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

from ..tokenization.tokenization_kmer import KmerTokenizer, KmerTokenizerFast
from .configuration_barcodebert import BarcodeBertConfig
from .modeling_barcodebert import (
    BarcodeBertForMaskedLM,
    BarcodeBertForSequenceClassification,
    BarcodeBertModel,
    BarcodeBertPreTrainedModel,
)


def _register_barcodebert() -> None:
    AutoConfig.register(BarcodeBertConfig.model_type, BarcodeBertConfig, exist_ok=True)
    AutoModel.register(BarcodeBertConfig, BarcodeBertModel, exist_ok=True)
    AutoModelForMaskedLM.register(BarcodeBertConfig, BarcodeBertForMaskedLM, exist_ok=True)
    AutoModelForSequenceClassification.register(BarcodeBertConfig, BarcodeBertForSequenceClassification, exist_ok=True)
    AutoTokenizer.register(BarcodeBertConfig, tokenizer_class=KmerTokenizerFast, exist_ok=True)
    # So that save_pretrained copies the code files next to the weights and writes auto_map entries.
    BarcodeBertConfig.register_for_auto_class()
    BarcodeBertModel.register_for_auto_class("AutoModel")
    BarcodeBertForMaskedLM.register_for_auto_class("AutoModelForMaskedLM")
    BarcodeBertForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
    KmerTokenizer.register_for_auto_class("AutoTokenizer")
    KmerTokenizerFast.register_for_auto_class("AutoTokenizer")


_register_barcodebert()

# CLIBD (multimodal issue): image–DNA–taxonomy contrastive model.
from .configuration_clibd import ClibdConfig  # noqa: E402
from .image_processing_clibd import ClibdImageProcessor  # noqa: E402
from .modeling_clibd import ClibdModel, ClibdOutput, ClibdPreTrainedModel  # noqa: E402


def _register_clibd() -> None:
    from transformers import AutoImageProcessor

    AutoConfig.register(ClibdConfig.model_type, ClibdConfig, exist_ok=True)
    AutoModel.register(ClibdConfig, ClibdModel, exist_ok=True)
    AutoImageProcessor.register(ClibdConfig, fast_image_processor_class=ClibdImageProcessor, exist_ok=True)
    ClibdConfig.register_for_auto_class()
    ClibdModel.register_for_auto_class("AutoModel")
    ClibdImageProcessor.register_for_auto_class("AutoImageProcessor")


_register_clibd()

__all__ = ["BarcodeBertConfig", "BarcodeBertPreTrainedModel", "BarcodeBertModel", "BarcodeBertForMaskedLM",
           "BarcodeBertForSequenceClassification",
           "ClibdConfig", "ClibdPreTrainedModel", "ClibdModel", "ClibdOutput", "ClibdImageProcessor"]
