"""The base of every CAM method: the trained networks, a batch of slices, one uniform call.

In the shape of pytorch-grad-cam (one base, one small file per method)::

    networks = CamNetworks(model, attentions={(1, 2, 3, 4): attention})
    batch = CamBatch(images, networks)          # images (B, 1, H, W) float32 in [0, 1]
    cam = AmeCam("ame_cam", exits=(1, 2, 3, 4))(batch)   # (B, H, W) float32 in [0, 1]

Several methods need the same expensive work on a batch (the multi-exit forward pass that gives
the exit maps; the forward + backward pass of the gradient baselines). A method declares it as
its :attr:`CamMethod.shared_pass`, a :class:`SharedPass` object, and asks the batch for it with
``batch.shared(pass)``: the batch runs each pass at most once and keeps the result, keyed by the
pass object itself, so that methods share work without knowing about each other.

Where a map lives: ``CamBatch(..., restrict_to_brain=True)`` (``EvaluationConfig.restrict_to_brain``)
makes every method normalise its map over the brain pixels only (:attr:`CamBatch.region`, slice > 0)
and leave 0 outside; every method normalises through :meth:`CamBatch.normalise`, so the rule is
the same for all of them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from amecam_lib.equations import AttentionFunction, brain_region, normalise_maps
from amecam_lib.models.multi_exit import N_EXITS, ExitLogit, MultiExitResNet


class CamNetworks:
    """The trained networks the methods read, and Score-CAM's batch size.

    Args:
        model: the trained :class:`MultiExitResNet` (put in eval mode here; never trained).
        attentions: the attention networks A of Eq. 2 by the exits they aggregate (1-based, sorted),
            e.g. ``{(1, 2, 3, 4): attention, (2, 3): attention_2_3}``; ``None`` values are skipped.
            An ``nn.Module`` is moved to the model's device and put in eval mode; any other callable
            (``equations.AttentionFunction``) is used as it is.
        score_cam_batch_size: masked slices per forward in Score-CAM's channel scoring (speed only).
        references: other trained networks by name, for the reference rows: ``"unet_fsl"`` (the
            fully supervised U-Net), ``"c2am_head"`` (C2AM's class-agnostic head), ``"lfi_cam"``
            (LFI-CAM's network, :class:`~amecam_lib.models.lfi_cam.LfiCamNet`), ``"swin_mil"`` (Swin-MIL), ``"cf_ul"``, ``"cf_fsl"``; ``None``
            values are skipped. Moved to the model's device, eval mode.

    Attributes:
        model, device (the model's), tumour_logit (:class:`ExitLogit` of exit 4, the classifier's
        output: ``(B, 1)``, what the gradient baselines explain), score_cam_batch_size, references.
    """

    def __init__(self, model: MultiExitResNet,
                 attentions: Mapping[tuple[int, ...], AttentionFunction | None] | None = None,
                 score_cam_batch_size: int = 128, references: Mapping[str, nn.Module | None] | None = None):
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.attentions: dict[tuple[int, ...], AttentionFunction] = {
            tuple(exits): attention.to(self.device).eval() if isinstance(attention, nn.Module) else attention
            for exits, attention in (attentions or {}).items() if attention is not None}
        self.tumour_logit = ExitLogit(model, exit_index=N_EXITS).eval()
        self.score_cam_batch_size = int(score_cam_batch_size)
        self.references: dict[str, nn.Module] = {
            name: network.to(self.device).eval() if isinstance(network, nn.Module) else network
            for name, network in (references or {}).items() if network is not None}

    def reference(self, name: str) -> nn.Module:
        """The trained reference network ``name`` (``"unet_fsl"``, ``"c2am_head"``, ``"lfi_cam"``, ``"swin_mil"``, ``"cf_ul"``, ``"cf_fsl"``).

        Raises:
            ValueError: none was given (the message says which phase trains it).
        """
        if name not in self.references:
            raise ValueError(f"no {name!r} network was given; train it first (notebook 05: "
                             f"amecam_lib.baselines.train_reference_networks) and pass it as references={{{name!r}: ...}}")
        return self.references[name]

    def attention(self, exits: Sequence[int], restrict_to_brain: bool | None = None) -> AttentionFunction:
        """The attention network over ``exits``.

        Args:
            exits: 1-based exits, sorted.
            restrict_to_brain: the n(.) the maps will be normalised with; when given, an attention
                network that records another one (``attention.restrict_to_brain``, set by
                ``load_attention``) is refused.

        Raises:
            ValueError: none was given for these exits, or it was trained with the other n(.)
                (:func:`check_attention_normalisation`).
        """
        exits = tuple(exits)
        if exits not in self.attentions:
            raise ValueError(f"no attention network over exits {exits} was given; train one with "
                             f"train_attention(exits={exits}) (notebook 04) and load it with load_attention")
        attention = self.attentions[exits]
        if restrict_to_brain is not None:
            check_attention_normalisation(attention, restrict_to_brain, exits)
        return attention


def check_attention_normalisation(attention: AttentionFunction, restrict_to_brain: bool,
                                  exits: Sequence[int] = ()) -> None:
    """Refuse an attention network trained with another n(.) than the one the maps will use.

    A learns from the maps it was trained on: n(M_i) over the whole slice, or over the brain only
    (``EvaluationConfig.restrict_to_brain``). Fed maps of the other kind it sees inputs it never
    saw. The setting A was trained with is ``attention.restrict_to_brain`` (set by
    :func:`amecam_lib.aggregation.load_attention` from its checkpoint); ``None`` or a callable
    without it (a hand-made A in a test) is accepted.

    Raises:
        ValueError: the two settings differ (the message names ``EvaluationConfig.restrict_to_brain``).
    """
    trained = getattr(attention, "restrict_to_brain", None)
    if trained is not None and bool(trained) != bool(restrict_to_brain):
        raise ValueError(
            f"the attention network over exits {tuple(exits)} was trained with "
            f"EvaluationConfig.restrict_to_brain={bool(trained)}, but the maps are normalised with "
            f"restrict_to_brain={bool(restrict_to_brain)}; retrain it with the same preset "
            f"(train_attention reads preset.evaluation.restrict_to_brain) or change the setting")


class SharedPass:
    """Work on a batch that several methods need; :class:`CamBatch` runs it at most once per batch.

    Subclasses implement :meth:`run`. The pass object is the cache key, so make one instance per
    kind of pass (a module-level constant) and let every method that shares it name that instance.
    """

    name: str = "shared pass"

    def run(self, batch: CamBatch) -> Any:
        """Compute the shared result for ``batch``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class CamBatch:
    """One batch of slices, the networks, and the results of the shared passes run on it so far.

    Args:
        images: ``(B, 1, H, W)`` slices in [0, 1], NumPy or torch (float32 copy on the networks'
            device).
        networks: :class:`CamNetworks`.
        methods: the methods that will be asked for on this batch, if known: a shared pass may then
            serve them all at once (the gradient pass hooks every gradient baseline listed here).
        restrict_to_brain: normalise every map over the brain only and leave it 0 outside
            (``EvaluationConfig.restrict_to_brain``; see :meth:`normalise`).

    Attributes:
        images: ``(B, 1, H, W) float32`` on the networks' device.
        region: ``(B, 1, H, W) bool`` brain (``images > 0``) when ``restrict_to_brain``, else None.

    Raises:
        ValueError: ``images`` is not ``(B, 1, H, W)``, or holds NaN / infinite values.
    """

    def __init__(self, images, networks: CamNetworks, methods: Sequence[CamMethod] = (),
                 restrict_to_brain: bool = False):
        image_tensor = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
        if image_tensor.ndim != 4 or image_tensor.shape[1] != 1:
            raise ValueError(f"images must be (B, 1, H, W), got {tuple(image_tensor.shape)}")
        image_tensor = image_tensor.float()
        if not torch.isfinite(image_tensor).all():
            raise ValueError("images contain NaN or infinite values")
        self.images: torch.Tensor = image_tensor.to(networks.device)
        self.networks = networks
        self.methods: tuple[CamMethod, ...] = tuple(dict.fromkeys(methods))
        self.restrict_to_brain = bool(restrict_to_brain)
        self.region: torch.Tensor | None = brain_region(self.images) if self.restrict_to_brain else None
        self._shared: dict[SharedPass, Any] = {}

    def normalise(self, maps: torch.Tensor) -> torch.Tensor:
        """n(.) of this batch's maps: per image (and per map) over the whole slice, or over the brain
        only (0 outside) when the batch was made with ``restrict_to_brain``.

        Args:
            maps: ``(B, H, W)`` (one map per slice) or ``(B, n, H, W)`` float.

        Returns:
            the same shape, float32 in [0, 1] (:func:`amecam_lib.equations.normalise_maps`).
        """
        maps = maps.to(self.images.device)
        if self.region is None:
            return normalise_maps(maps)
        return normalise_maps(maps, self.region[:, 0] if maps.ndim == 3 else self.region)

    def attention(self, exits: Sequence[int]) -> AttentionFunction:
        """The attention network over ``exits``, checked against this batch's n(.)
        (:meth:`CamNetworks.attention`)."""
        return self.networks.attention(exits, restrict_to_brain=self.restrict_to_brain)

    def shared(self, shared_pass: SharedPass) -> Any:
        """The result of ``shared_pass`` on this batch: run on first use, then kept."""
        if shared_pass not in self._shared:
            self._shared[shared_pass] = shared_pass.run(self)
        return self._shared[shared_pass]

    def has_run(self, shared_pass: SharedPass) -> bool:
        """Whether ``shared_pass`` has already run on this batch."""
        return shared_pass in self._shared


class CamMethod:
    """A CAM method: ``method(batch)`` -> ``(B, H, W) float32`` in [0, 1], high = tumour.

    Subclasses set :attr:`name` (the stable name used in ``results.csv``) and, when they share
    work with other methods, :attr:`shared_pass`; they implement :meth:`__call__`.
    :attr:`supervision` is the paper's Table 1 type: ``"WSSS"`` (slice labels), ``"UL"`` (no label)
    or ``"FSL"`` (trained on masks); :attr:`network` names a trained reference network the method
    needs beside the classifier (:meth:`CamNetworks.reference`), or None. :attr:`gated`: whether
    ``EvaluationConfig.gate_by_prediction`` (empty the mask of a slice the multi-exit classifier
    calls normal) applies to the method; False for every method built on a network of its own rather
    than on the multi-exit classifier (``unet_fsl``, ``lfi_cam``, ``swin_mil``, ``cf_ul``,
    ``cf_fsl``), so that those rows do not inherit that classifier's mistakes.
    """

    name: str = ""
    shared_pass: SharedPass | None = None
    supervision: str = "WSSS"
    network: str | None = None
    gated: bool = True

    def __call__(self, batch: CamBatch) -> torch.Tensor:
        """The method's maps for the batch's slices: ``(B, H, W) float32`` in [0, 1].

        Raises:
            ValueError: a network the method needs was not given (e.g. its attention network).
            RuntimeError: the CAM library failed silently.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
