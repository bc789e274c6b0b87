"""CLIBD's contrastive loss: the symmetric CLIP (InfoNCE) loss over every pair of modalities present.

As ``bioscanclip/model/loss_func.py: ClipLoss``: embeddings are L2-normalised; for each pair (a, b) the logits are
``scale * a @ b.T`` and the targets are the diagonal (each specimen is the positive of its own other modalities).
Both directions are scored, so image+DNA+text gives 6 cross-entropy terms (3 pairs x 2) and the loss is their mean.

Under ``torch.distributed`` (``torchrun`` / ``accelerate``) each process's embeddings are gathered from every
process *with gradient*, and each process scores its own rows against all columns ("local loss", as open_clip and
CLIBD with ``gather_with_grad``), so the negatives are the global batch. Every process must hold the same number
of rows (use ``dataloader_drop_last``).
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn import functional as F


def gather_with_grad(features: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``features`` of every process stacked (gradient flows back to each), and this process's row offset."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, 0
    from torch.distributed.nn.functional import all_gather

    gathered = all_gather(features.contiguous())
    return torch.cat(gathered, dim=0), dist.get_rank() * features.shape[0]


def pair_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between rows of ``a`` and ``b`` (L2-normalised), over the global batch when distributed."""
    all_a, offset = gather_with_grad(a)
    all_b, _ = gather_with_grad(b)
    targets = torch.arange(a.shape[0], device=a.device) + offset
    logits_ab = logit_scale * a @ all_b.T
    logits_ba = logit_scale * b @ all_a.T
    return (F.cross_entropy(logits_ab, targets) + F.cross_entropy(logits_ba, targets)) / 2


class ClibdLoss(nn.Module):
    """Mean of the symmetric CLIP loss over every pair of the modalities given (at least two)."""

    def forward(self, embeddings: dict[str, torch.Tensor], logit_scale: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """
        Args:
            embeddings: modality name -> L2-normalised ``(batch, dim)`` embeddings; ``None`` entries are skipped.
            logit_scale: the (already exponentiated and clamped) inverse temperature.
        Returns:
            the loss and ``{"image-dna": ..., ...}`` with each pair's loss (detached).
        """
        present = {name: value for name, value in embeddings.items() if value is not None}
        if len(present) < 2:
            raise ValueError(f"The contrastive loss needs at least two modalities; got {sorted(present) or 'none'}.")
        sizes = {name: value.shape[0] for name, value in present.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"Every modality needs one row per specimen; got batch sizes {sizes}.")
        losses = {f"{a}-{b}": pair_loss(present[a], present[b], logit_scale)
                  for a, b in itertools.combinations(present, 2)}
        loss = torch.stack(list(losses.values())).mean()
        return loss, {name: value.detach() for name, value in losses.items()}


__all__ = ["ClibdLoss", "pair_loss", "gather_with_grad"]
