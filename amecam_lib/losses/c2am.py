"""The C2AM contrastive loss that trains AME-CAM's attention network (paper Eq. 3).

From C2AM (Xie et al., "Contrastive learning of class-agnostic activation map", CVPR 2022): the
foreground features v^f and background features v^b of a batch are pulled apart (SimMin) while
foregrounds are pulled together and backgrounds are pulled together (SimMax)::

    loss = SimMin(v^f, v^b) + SimMax(v^f, v^f) + SimMax(v^b, v^b)            (Eq. 3)

over all B x B pairs of the batch (the diagonal included, as in C2AM), with the cosine similarity
clamped to [0.0005, 0.9995] so that the logarithms stay finite:

- ``SimMin(a, b) = mean_{i,j} -log(1 - sim(a_i, b_j))``
- ``SimMax(a, a) = mean_{i,j} -log(sim(a_i, a_j)) * exp(-rank_decay * (rank_ij - 1))``, where
  ``rank_ij`` (1 = most similar) is the position of pair (i, j) in row i sorted by similarity,
  descending. Dissimilar pairs (likely a wrong map, or a different tissue) count less.

The rank weights are constants (no gradient flows through the sort), as in C2AM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_similarity_matrix(first: torch.Tensor, second: torch.Tensor,
                             sim_clamp: tuple[float, float] = (0.0005, 0.9995)) -> torch.Tensor:
    """All-pairs cosine similarity, clamped.

    Args:
        first: ``(B, D)`` features; second: ``(B2, D)`` features.
        sim_clamp: ``(low, high)`` with ``0 < low < high < 1``.

    Returns:
        ``(B, B2) float32`` in ``[low, high]``; entry (i, j) = cos(first_i, second_j). An all-zero
        feature vector has similarity 0 to everything (then clamped to ``low``).
    """
    first_unit = F.normalize(first.float(), dim=1)
    second_unit = F.normalize(second.float(), dim=1)
    return torch.clamp(first_unit @ second_unit.T, min=sim_clamp[0], max=sim_clamp[1])


def sim_min_loss(first: torch.Tensor, second: torch.Tensor,
                 sim_clamp: tuple[float, float] = (0.0005, 0.9995)) -> torch.Tensor:
    """SimMin: mean over all pairs of ``-log(1 - sim)`` (pushes foreground from background).

    Args:
        first, second: ``(B, D)`` features (e.g. foreground and background).

    Returns:
        scalar tensor >= -log(1 - low) > 0.
    """
    return (-torch.log(1.0 - cosine_similarity_matrix(first, second, sim_clamp))).mean()


def rank_weights(similarity: torch.Tensor, rank_decay: float = 0.25) -> torch.Tensor:
    """C2AM's rank weights ``exp(-rank_decay * (rank - 1))``.

    Args:
        similarity: ``(B, B2)`` similarities.
        rank_decay: decay per rank step (0.25 in C2AM; 0 weighs every pair equally).

    Returns:
        ``(B, B2)`` weights in (0, 1], no gradient; rank 1 (weight 1) is the most similar entry of
        each row. Ties are broken by a stable sort (lower column index first).
    """
    with torch.no_grad():
        order = torch.argsort(similarity, dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order)
        positions = torch.arange(1, similarity.shape[1] + 1, device=similarity.device)
        ranks.scatter_(1, order, positions.expand_as(order))
        return torch.exp(-rank_decay * (ranks.to(similarity.dtype) - 1.0))


def sim_max_loss(features: torch.Tensor, rank_decay: float = 0.25,
                 sim_clamp: tuple[float, float] = (0.0005, 0.9995)) -> torch.Tensor:
    """SimMax: rank-weighted mean over all pairs of ``-log(sim)`` (pulls features together).

    Args:
        features: ``(B, D)`` features (all foregrounds, or all backgrounds).
        rank_decay: see :func:`rank_weights`.

    Returns:
        scalar tensor >= 0.
    """
    similarity = cosine_similarity_matrix(features, features, sim_clamp)
    return (-torch.log(similarity) * rank_weights(similarity, rank_decay)).mean()


def c2am_loss(fg_features: torch.Tensor, bg_features: torch.Tensor, rank_decay: float = 0.25,
              sim_clamp: tuple[float, float] = (0.0005, 0.9995)) -> torch.Tensor:
    """Paper Eq. 3: ``SimMin(v^f, v^b) + SimMax(v^f, v^f) + SimMax(v^b, v^b)``.

    Args:
        fg_features: ``(B, D) float`` foreground features v^f (B >= 1).
        bg_features: ``(B, D) float`` background features v^b.
        rank_decay: C2AM's SimMax rank decay (``AggregationConfig.rank_decay``, 0.25).
        sim_clamp: clamp of the cosine similarity (``AggregationConfig.sim_clamp``).

    Returns:
        scalar tensor (float32), differentiable w.r.t. both feature sets.

    Raises:
        ValueError: features not 2-D, shapes differ, an empty batch, or a bad clamp.
    """
    if fg_features.ndim != 2 or fg_features.shape != bg_features.shape or fg_features.shape[0] == 0:
        raise ValueError(f"fg_features and bg_features must both be (B, D) with B >= 1, got "
                         f"{tuple(fg_features.shape)} and {tuple(bg_features.shape)}")
    low, high = sim_clamp
    if not 0.0 < low < high < 1.0:
        raise ValueError(f"sim_clamp must satisfy 0 < low < high < 1, got {sim_clamp}")
    return (sim_min_loss(fg_features, bg_features, sim_clamp)
            + sim_max_loss(fg_features, rank_decay, sim_clamp)
            + sim_max_loss(bg_features, rank_decay, sim_clamp))
