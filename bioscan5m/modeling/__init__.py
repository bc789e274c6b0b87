"""Models, registered with the ``transformers`` Auto classes when ``bioscan5m`` is imported.

Each model family sits in its own ``configuration_x.py`` / ``modeling_x.py`` pair that imports nothing else of
ours, so that ``save_pretrained`` can copy those files next to the weights (``trust_remote_code`` loading).
Model classes are registered through `_DeferredModelClass`, so that ``import bioscan5m`` loads only the
configuration and tokenizer code; the modelling code (and transformers' model stack) loads when a model is built.
To add a family: register its config, tokenizer and deferred model classes in a ``_register_x`` function, and
list its classes in ``_LAZY_EXPORTS``.
"""

from __future__ import annotations

import importlib
import importlib.util

from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                          AutoModelForZeroShotImageClassification, AutoTokenizer)

from ..tokenization.tokenization_kmer import KmerTokenizerFast
from .configuration_barcodebert import BarcodeBertConfig

#: Public model classes, imported from their module on first access.
_LAZY_EXPORTS = {
    "BarcodeBertPreTrainedModel": "modeling_barcodebert",
    "BarcodeBertModel": "modeling_barcodebert",
    "BarcodeBertForMaskedLM": "modeling_barcodebert",
    "BarcodeBertForSequenceClassification": "modeling_barcodebert",
    "BarcodeBertClassifierOutput": "modeling_barcodebert",
    "BarcodeBertForContrastiveLearning": "modeling_barcodebert",
    "BarcodeBertContrastiveOutput": "modeling_barcodebert",
}


class _DeferredModelClass:
    """Stands in for a model class in an Auto mapping and imports it on first use (``from_pretrained`` or
    ``from_config``, which are all the Auto classes call)."""

    def __init__(self, module: str, name: str, config_class: type):
        self.module, self.__name__, self.config_class = module, name, config_class

    def resolve(self) -> type:
        return getattr(_import_model_module(self.module), self.__name__)

    def from_pretrained(self, *args, **kwargs):
        return self.resolve().from_pretrained(*args, **kwargs)

    def _from_config(self, *args, **kwargs):
        return self.resolve()._from_config(*args, **kwargs)


def _register_barcodebert() -> None:
    AutoConfig.register(BarcodeBertConfig.model_type, BarcodeBertConfig, exist_ok=True)
    AutoTokenizer.register(BarcodeBertConfig, tokenizer_class=KmerTokenizerFast, exist_ok=True)
    for auto_class, name in [(AutoModel, "BarcodeBertModel"), (AutoModelForMaskedLM, "BarcodeBertForMaskedLM"),
                             (AutoModelForSequenceClassification, "BarcodeBertForSequenceClassification")]:
        auto_class.register(BarcodeBertConfig, _DeferredModelClass("modeling_barcodebert", name, BarcodeBertConfig),
                            exist_ok=True)


_register_barcodebert()


# CLIBD: image–DNA–taxonomy contrastive model. The image processor imports torchvision, so it is
# registered deferred too; ``AutoImageProcessor`` then finds it through the auto_map of a saved folder.
from .configuration_clibd import ClibdConfig  # noqa: E402

_LAZY_EXPORTS.update({"ClibdModel": "modeling_clibd", "ClibdPreTrainedModel": "modeling_clibd",
                      "ClibdOutput": "modeling_clibd", "ClibdImageProcessor": "image_processing_clibd",
                      "ClibdProcessor": "processing_clibd"})


def _register_clibd() -> None:
    AutoConfig.register(ClibdConfig.model_type, ClibdConfig, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForZeroShotImageClassification):
        auto_class.register(ClibdConfig, _DeferredModelClass("modeling_clibd", "ClibdModel", ClibdConfig), exist_ok=True)


_register_clibd()


def _import_model_module(module: str):
    """Import one of the modelling modules, naming a broken torch/torchvision pair when that is the cause.

    transformers imports torchvision whenever it is installed, so a torchvision built for another torch makes
    every model import fail with an opaque operator error; say what to install instead.
    """
    try:
        return importlib.import_module(f".{module}", __name__)
    except Exception as error:
        if importlib.util.find_spec("torchvision") is None:
            raise
        try:
            import torchvision  # noqa: F401
        except Exception as torchvision_error:
            import torch

            raise ImportError(
                f"torchvision is installed but does not import ({torchvision_error}), and transformers needs it to "
                f"load models. torch {torch.__version__} and torchvision must be a matching pair: install both "
                "together, e.g. pip install torch==2.14.1 torchvision==0.29.1 (see README, Install).") from error
        raise


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(_import_model_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BarcodeBertConfig", "ClibdConfig", *_LAZY_EXPORTS]
