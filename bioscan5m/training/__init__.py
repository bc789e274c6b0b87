"""Training on the HF Trainer: BarcodeBERT MLM pretraining and fine-tuning (classification, contrastive), CLIBD.

Submodules are imported on use (``from bioscan5m.training.pretrain import pretrain``), so importing this
package costs nothing.
"""
