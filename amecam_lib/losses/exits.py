"""Multi-exit classification loss, paper Eq. 1:

    loss = sum_{i=1..4} w_i * CE(GAP(M_i), L)

Each exit has a single tumour logit GAP(M_i), so the cross-entropy of the paper is the binary
cross-entropy with logits, ``-[L log sigmoid(z) + (1 - L) log(1 - sigmoid(z))]``, averaged over
the batch. The paper sums the exits with w_i = 1 (``weights=None``); the authors' code weights
them 0.25, 0.5, 0.75, 1.0 from shallow to deep (``MultiExitConfig.exit_weights``).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def multi_exit_loss(exit_logits: torch.Tensor, labels: torch.Tensor,
                    weights: Sequence[float] | None = None,
                    pos_weight: float | None = None) -> torch.Tensor:
    """Eq. 1: (weighted) sum over exits of the batch-mean binary cross-entropy.

    Args:
        exit_logits: ``(B, E) float`` one tumour logit per exit (``ExitOutput.logits``, E = 4).
        labels: ``(B,)`` slice labels in {0, 1} (int or float): 1 = tumour.
        weights: ``E`` non-negative exit weights, or None for the paper's plain sum.
        pos_weight: optional weight of the tumour class inside each BCE term (``n_normal /
            n_tumour`` balances the classes; ``torch.nn.BCEWithLogitsLoss`` semantics). None = 1.

    Returns:
        scalar float32 loss (>= 0).

    Raises:
        ValueError: wrong shapes, labels outside {0, 1}, wrong number of weights or negative ones,
            non-positive ``pos_weight``.
    """
    if exit_logits.ndim != 2:
        raise ValueError(f"exit_logits must be (B, E), got {tuple(exit_logits.shape)}")
    batch, n_exits = exit_logits.shape
    if labels.shape != (batch,):
        raise ValueError(f"labels must be ({batch},) to match exit_logits, got {tuple(labels.shape)}")
    targets = labels.to(device=exit_logits.device, dtype=torch.float32)
    if not bool(((targets == 0) | (targets == 1)).all()):
        raise ValueError(f"labels must be 0 or 1, got values {sorted(set(targets.tolist()))}")
    if weights is None:
        exit_weights = torch.ones(n_exits, device=exit_logits.device)
    else:
        if len(weights) != n_exits or any(w < 0 for w in weights):
            raise ValueError(f"weights must be {n_exits} non-negative numbers, got {tuple(weights)}")
        exit_weights = torch.tensor([float(w) for w in weights], device=exit_logits.device)
    positive_weight = None
    if pos_weight is not None:
        if not pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        positive_weight = torch.tensor(float(pos_weight), device=exit_logits.device)
    per_exit = F.binary_cross_entropy_with_logits(
        exit_logits.float(), targets[:, None].expand(-1, n_exits), pos_weight=positive_weight,
        reduction="none").mean(dim=0)
    return (per_exit * exit_weights).sum()
