"""Supervised contrastive loss (SupCon, Khosla et al., NeurIPS 2020, the L_out form) and its
unsupervised special case SimCLR (Chen et al., ICML 2020), for AME-CAM's pretraining (Sec. 3.2).

For N = B x V projections z (V augmented views of B slices) and anchor i with positives P(i)
(other projections with the same label; SimCLR: the other views of the same slice) and A(i) =
every projection except i::

    L = mean over anchors with |P(i)| > 0 of  -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau)
                                                                    / sum_{a in A(i)} exp(z_i.z_a / tau) )

``normalise=True`` (default; SupCon and SimCLR as published): the z are L2-normalised first, so
z_i.z_p is a cosine similarity in [-1, 1] and the loss does not change when a projection is
scaled. ``normalise=False``: the raw dot products of the projections, what the authors' AME-CAM
code computes (its two ``F.normalize`` calls are commented out); the loss then depends on the
projections' lengths, and z_i.z_p / tau is unbounded.

Written here rather than taken from pytorch-metric-learning so that the view/label bookkeeping
and the "no positive" rule are visible; the tests compare both (its ``SupConLoss`` with the
default cosine similarity, and with ``DotProductSimilarity(normalize_embeddings=False)`` for
``normalise=False``). An anchor without a positive (possible with one view, or labels without a
partner) gives 0/0 in the common implementation: it is masked out, and a batch with no positive at
all returns a zero loss that keeps the graph (never NaN). The similarities are computed in
float32 with autocast off, so a mixed-precision training step does not round them to 16 bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supcon_loss(view_features: torch.Tensor, other_view_features: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, temperature: float = 0.07,
                normalise: bool = True) -> torch.Tensor:
    """SupCon (``labels`` given) or SimCLR (``labels=None``) loss.

    Args:
        view_features: ``(B, V, D)`` projections of V views of each of B slices, or ``(B, D)``
            for one view (then ``other_view_features`` may hold the second view).
        other_view_features: optional ``(B, D)`` second view; stacked with ``view_features``.
        labels: ``(B,)`` integer class of each slice, or None (SimCLR: positives are only the
            other views of the same slice).
        temperature: tau > 0 (0.07 in the paper's setting and the authors' code).
        normalise: L2-normalise the projections first (True: SupCon / SimCLR as published);
            False: raw dot products, as the authors' code.

    Returns:
        scalar float32 loss, computed in float32 whatever the input dtype (autocast off).

    Raises:
        ValueError: shapes that do not fit, non-positive temperature, non-finite features.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if other_view_features is not None:
        if view_features.ndim != 2 or other_view_features.shape != view_features.shape:
            raise ValueError("two views must both be (B, D) of equal shape, got "
                             f"{tuple(view_features.shape)} and {tuple(other_view_features.shape)}")
        view_features = torch.stack([view_features, other_view_features], dim=1)
    elif view_features.ndim == 2:
        view_features = view_features[:, None, :]
    if view_features.ndim != 3:
        raise ValueError(f"view_features must be (B, V, D) or (B, D), got {tuple(view_features.shape)}")
    batch, n_views, _ = view_features.shape
    if labels is not None and labels.shape != (batch,):
        raise ValueError(f"labels must be ({batch},), got {tuple(labels.shape)}")
    if not bool(torch.isfinite(view_features).all()):
        raise ValueError("supcon_loss got NaN or Inf features")

    device = view_features.device
    with torch.autocast(device_type=device.type, enabled=False):
        # (B, V, D) -> (B*V, D) with the V views of slice b in rows b*V .. b*V + V - 1.
        projections = view_features.float().reshape(batch * n_views, -1)
        if normalise:
            projections = F.normalize(projections, dim=1)
        sample_ids = torch.arange(batch, device=device).repeat_interleave(n_views)
        classes = sample_ids if labels is None else labels.to(device).repeat_interleave(n_views)
        not_self = ~torch.eye(batch * n_views, dtype=torch.bool, device=device)
        positive_mask = (classes[:, None] == classes[None, :]) & not_self

        similarity = projections @ projections.T / temperature
        similarity = similarity.masked_fill(~not_self, float("-inf"))      # A(i) excludes i itself
        log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
        log_prob = log_prob.masked_fill(~not_self, 0.0)                     # drop the -inf diagonal

        n_positives = positive_mask.sum(dim=1)
        has_positive = n_positives > 0
        if not bool(has_positive.any()):
            return projections.sum() * 0.0
        mean_log_prob_positive = (log_prob * positive_mask).sum(dim=1)[has_positive] / n_positives[has_positive]
        return -mean_log_prob_positive.mean()
