"""Training and inference for the DNA models on the HF Trainer: MLM pretraining, fine-tuning, probes, embeddings.

Submodules are imported on use (``from bioscan5m.training.pretrain import pretrain``), so importing this
package costs nothing.
"""
