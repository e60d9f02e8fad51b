"""Settings of every phase in one place, and the presets that scale them.

Each phase has a frozen dataclass whose defaults are the paper's settings (AME-CAM, MICCAI 2023,
Sec. 3.2) or, where the paper is silent, the authors' public code (see ``REFERENCE_NOTES``-derived
comments on each field). A :class:`Preset` bundles one of each; three presets exist:

``paper``
    240 px slices, SupCon 100 epochs at batch 512, fine-tuning 10 epochs at batch 256: for a GPU.
``demo``
    the default: a 160 x 192 px window of the native 1 mm grid around the brain (no resampling), a
    few epochs, sized so the whole notebook series runs on a 2-core CPU in minutes.
``smoke``
    a 160 x 192 px window around the brain at 0.4 zoom (64 x 77 px), one or two epochs: for CI,
    seconds per notebook. Its numbers mean nothing.

Slice geometry (:class:`DataConfig`) is one of two: ``image_size`` resamples the whole slice to a
square, ``crop_size`` (with ``crop_zoom``) cuts a window of the native grid around the brain.
:meth:`Preset.with_overrides` switches between them: giving one clears the other.

Example::

    >>> preset = get_preset("demo")
    >>> preset.data.crop_size, preset.data.image_shape
    ((160, 192), (160, 192))
    >>> preset.with_overrides(image_size=96).data.image_shape
    (96, 96)
    >>> preset.with_overrides(crop_zoom=0.4).data.image_shape
    (64, 77)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
"""Project-wide modality names (BraTS 2018-2021 spelling), in the usual display order."""


@dataclass(frozen=True)
class DataConfig:
    """Slicing and split settings (paper Sec. 3.1; REFERENCE_NOTES "Data").

    Attributes:
        modalities: modalities to slice, names from :data:`MODALITIES`.
        image_size: side of the stored square slices in pixels; 240 keeps the BraTS grid,
            smaller values resample the whole slice (bilinear for images, nearest for masks).
            ``None`` when ``crop_size`` is set (the two are alternative geometries; setting both
            is a ``ValueError`` naming both).
        crop_size: ``(H, W)`` window, in pixels of the original grid, cut from every axial slice
            around the case's brain ("crop to non-zero", as nnU-Net): rows ``H`` along the first
            array axis of ``volume[:, :, z]`` (x, left-right in BraTS), columns ``W`` along the
            second (y, front-back; the brain is longer along y). The window is centred on the
            brain's bounding box over all z and shifted to lie inside the grid; a brain larger
            than the window is not cut silently (see :mod:`amecam_lib.slicing`). ``None``: no crop.
        crop_zoom: resampling factor of the cut window (``crop_size`` only): the stored slices
            are ``round(H * zoom) x round(W * zoom)`` px (halves rounded up), ``original spacing *
            H / round(H * zoom)`` mm per pixel (about ``1 mm / zoom`` in BraTS). 1.0 keeps the
            native 1 mm grid.
        tumour_fraction: a slice is labelled tumour (1) when its whole-tumour area is *more* than
            this fraction of the slice at the original grid (0.01 -> more than 576 px at 240 x 240).
        min_brain_fraction: slices whose brain area (non-zero voxels in any sliced modality) is
            below this fraction of the slice are dropped and listed as such in the manifest;
            0 keeps every slice, as the authors did.
        exclude_ambiguous: leave slices with 0 < tumour area <= threshold out of *training*
            (they stay in the manifest and in evaluation).
        val_fraction, test_fraction: patient-level split fractions; each split gets at least one
            case (rounded up).
        seed: seed of the patient-level split.
    """

    modalities: tuple[str, ...] = ("flair",)
    image_size: int | None = 240
    crop_size: tuple[int, int] | None = None
    crop_zoom: float = 1.0
    tumour_fraction: float = 0.01
    min_brain_fraction: float = 0.0
    exclude_ambiguous: bool = False
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.crop_size is not None and not isinstance(self.crop_size, tuple):
            object.__setattr__(self, "crop_size", tuple(self.crop_size))  # papermill passes lists
        if self.image_size is not None and self.crop_size is not None:
            raise ValueError(
                f"image_size={self.image_size} and crop_size={self.crop_size} are both set; they are "
                f"two geometries: give image_size=None to crop, or crop_size=None to resample")
        if self.image_size is None and self.crop_size is None:
            raise ValueError("image_size and crop_size are both None: set one of them")
        if self.crop_size is None and self.crop_zoom != 1.0:
            raise ValueError(f"crop_zoom={self.crop_zoom} applies only with crop_size, which is None")

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the stored slices in pixels: ``(image_size, image_size)``, or the crop
        window zoomed (``zoomed_size`` of each side)."""
        if self.crop_size is None:
            return (int(self.image_size), int(self.image_size))
        return (zoomed_size(self.crop_size[0], self.crop_zoom), zoomed_size(self.crop_size[1], self.crop_zoom))


GEOMETRY_FIELDS: tuple[str, ...] = ("image_size", "crop_size", "crop_zoom")
"""The :class:`DataConfig` fields that set the slice geometry (switched together by
:meth:`Preset.with_overrides`)."""


def zoomed_size(pixels: int, zoom: float) -> int:
    """Pixels of a side of ``pixels`` resampled by ``zoom``: ``round(pixels * zoom)``, halves
    rounded up (``zoomed_size(192, 0.4) == 77``, ``zoomed_size(160, 0.4) == 64``)."""
    return int(math.floor(pixels * zoom + 0.5))


def with_geometry(data: DataConfig, image_size: int | None = None,
                  crop_size: tuple[int, int] | None = None, crop_zoom: float | None = None) -> DataConfig:
    """``data`` with another slice geometry; ``None`` arguments are not given.

    ``image_size`` switches to square resampling (crop cleared, zoom 1); ``crop_size`` switches to
    a crop (``image_size`` cleared; the zoom kept unless ``crop_zoom`` is given); ``crop_zoom``
    alone changes the zoom of the crop.

    Raises:
        ValueError: ``image_size`` and ``crop_size`` both given; ``crop_zoom`` with ``image_size``,
            or without a crop.
    """
    if image_size is not None and crop_size is not None:
        raise ValueError(f"image_size={image_size} and crop_size={tuple(crop_size)} both given: "
                         f"choose one geometry (square resampling or a crop)")
    if image_size is not None:
        if crop_zoom is not None and crop_zoom != 1.0:
            raise ValueError(f"crop_zoom={crop_zoom} applies only with crop_size, not with "
                             f"image_size={image_size}")
        return dataclasses.replace(data, image_size=image_size, crop_size=None, crop_zoom=1.0)
    if crop_size is not None:
        zoom = data.crop_zoom if crop_zoom is None else crop_zoom
        return dataclasses.replace(data, image_size=None, crop_size=tuple(crop_size), crop_zoom=zoom)
    if crop_zoom is not None:
        return dataclasses.replace(data, crop_zoom=crop_zoom)
    return data


@dataclass(frozen=True)
class PretrainConfig:
    """SupCon pretraining of the ResNet-18 encoder (paper Sec. 3.2; Khosla et al. 2020).

    ``mode`` (the loss is :func:`amecam_lib.losses.supcon.supcon_loss` in every mode):

    ``"supcon"``
        the paper: SupCon with the slice labels, projections L2-normalised.
    ``"simclr"``
        SimCLR as published (Chen et al. 2020): no labels (the positives of a view are the other
        views of its slice), projections L2-normalised. Not what the authors' code ran.
    ``"simclr_authors"``
        what the authors' code ran: no labels, projections *not* L2-normalised (raw dot products
        / ``temperature``), a projection head whose first linear layer has no bias, and plain SGD
        (no momentum) when ``optimizer="sgd"``. The mode does not change the other fields; for the
        rest of the authors' setting set ``optimizer="sgd"``, ``lr=1e-3``, ``min_lr=0``,
        ``projection_dim=256`` (512 -> 512 -> ReLU -> 256), all in :data:`AUTHORS_PRETRAIN`:
        ``preset.with_overrides(**AUTHORS_PRETRAIN)``. Their batch 512, 100 epochs, weight decay
        1e-5 and tau 0.07 are this class's defaults; their InstanceNorm is
        ``multi_exit.norm="instance"`` (shared with fine-tuning). Not reproduced: their cosine
        schedule starts only after epoch 10.
    """

    mode: str = "supcon"
    epochs: int = 100
    batch_size: int = 512
    lr: float = 1e-4
    min_lr: float = 5e-6
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    temperature: float = 0.07
    projection_dim: int = 128
    # Area range of the random resized crop of each SupCon view (amecam_lib.augment.MRIAugment).
    crop_scale: tuple[float, float] = (0.6, 1.0)


PRETRAIN_MODES: tuple[str, ...] = ("supcon", "simclr", "simclr_authors")
"""The values of :attr:`PretrainConfig.mode`."""

AUTHORS_PRETRAIN: dict[str, object] = {
    "pretrain.mode": "simclr_authors", "pretrain.optimizer": "sgd", "pretrain.lr": 1e-3,
    "pretrain.min_lr": 0.0, "pretrain.projection_dim": 256,
}
"""Overrides that make the pretraining the authors' code's (SimCLR without L2 normalisation, SGD lr
1e-3 down to 0, a 256-d projection): ``get_preset("paper").with_overrides(**AUTHORS_PRETRAIN)``.
Batch size and epochs stay the preset's (the ``paper`` preset's 512 and 100 are the authors')."""


@dataclass(frozen=True)
class MultiExitConfig:
    """Multi-exit fine-tuning, paper Eq. 1 (Adam, lr 1e-4, wd 1e-5, cosine to 5e-6).

    ``exit_weights=None`` is the paper's plain sum over exits; ``(0.25, 0.5, 0.75, 1.0)`` is the
    authors' code. ``norm="instance"`` is the authors' InstanceNorm (affine=False) option.
    """

    arch: str = "resnet18"
    norm: str = "batch"
    exit_weights: tuple[float, ...] | None = None
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-4
    min_lr: float = 5e-6
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    init_from_pretrain: bool = True
    # Batch augmentation while fine-tuning (flip, small rotation, mild crop, intensity jitter);
    # the paper does not say; a mild crop keeps the tumour in view.
    augment: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)
    # "none" = the paper's plain CE; "pos_weight" = tumour class weighted n_normal / n_tumour;
    # "sampler" = class-balanced sampling of the train split.
    class_balance: str = "none"
    # Validation metric that picks best.pt: "auc_exit4" (the authors' code; maximised) or
    # "val_loss" (Eq. 1 on the val split; minimised). Ties go to the later epoch.
    select_by: str = "auc_exit4"


@dataclass(frozen=True)
class AggregationConfig:
    """Attention-network training with the C2AM loss, paper Eq. 2-3 (SGD in the paper).

    ``features="pixels"`` (default) compares the masked images themselves (the authors' code);
    ``features="encoder"`` compares frozen-encoder features pooled under M_f and 1 - M_f (C2AM's
    choice; where: ``pool_region``). ``rank_decay`` and ``sim_clamp`` are C2AM's SimMax weighting
    and clamp.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-4
    min_lr: float = 5e-6
    weight_decay: float = 1e-5
    optimizer: str = "sgd"
    momentum: float = 0.9
    features: str = "pixels"
    rank_decay: float = 0.25
    sim_clamp: tuple[float, float] = (0.0005, 0.9995)
    # Train A on the train-split slices labelled tumour ("tumour": a foreground exists to separate)
    # or on every train slice ("all"). Slice labels only, never masks.
    train_slices: str = "tumour"
    # BatchNorm + ReLU after A's last conv too (the authors' code); off by default, see
    # amecam_lib.models.attention.
    final_bn_relu: bool = False
    # Channels of A's three hidden convolutions (32 in the authors' code; the demo preset uses
    # fewer to fit the CPU time budget).
    hidden: int = 32
    # Where the "encoder" features are pooled: "slice" (every pixel: fg = M_f, bg = 1 - M_f) or
    # "brain" (brain pixels only: fg = M_f * brain, bg = (1 - M_f) * brain), so that "foreground =
    # brain, background = air" cannot satisfy Eq. 3 (see amecam_lib.aggregation.c2am_features).
    # No effect on "pixels" features (the air is 0 in both masked slices already).
    pool_region: str = "slice"


@dataclass(frozen=True)
class UnetFslConfig:
    """The fully supervised reference ``unet_fsl`` (paper Table 1 "FSL", Opt. U-net, Futrega et al.
    2021): MONAI's ``BasicUNet`` trained on the training patients' whole-tumour masks
    (:mod:`amecam_lib.baselines.unet_fsl`). The only phase that reads masks for training.

    Attributes:
        channels: ``BasicUNet`` features, six numbers (four encoder levels, bottleneck, last
            decoder level); MONAI's default is (32, 32, 64, 128, 256, 32), the presets scale it down.
        epochs, batch_size, lr, min_lr, weight_decay: Adam with the cosine schedule of every phase.
        flip: random left-right and front-back flips of image and mask together while training.
        patch_size: ``(h, w)``: train on a random window of each batch (the same for the whole batch;
            nnU-Net and the Optimized U-Net train on patches too), a cheaper step; the network is
            convolutional and predicts whole slices. None (or a window as large as the slice):
            whole slices.
        patch_tumour_fraction: the share of patches centred on a tumour pixel of the batch (nnU-Net's
            foreground oversampling, 1/3); the others are placed uniformly.
        norm: ``BasicUNet``'s normalisation, ``"batch"`` (the same on patches and whole slices) or
            ``"instance"`` (MONAI's default).
        intensity_augment: the Optimized U-Net's random contrast, brightness and noise while training
            (:func:`amecam_lib.baselines.unet_fsl.random_intensity`).
    """

    channels: tuple[int, ...] = (32, 32, 64, 128, 256, 32)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-5
    flip: bool = True
    patch_size: tuple[int, int] | None = None
    patch_tumour_fraction: float = 0.33
    norm: str = "batch"
    intensity_augment: bool = True


@dataclass(frozen=True)
class CfUlConfig:
    """The unsupervised reference ``cf_ul`` (paper Table 1 "UL C&F (2020)"; Chen and Frey,
    arXiv:2001.10155): a U-Net trained on the Active Contour Without Edges (Chan-Vese) energy of its
    own soft segmentation of each slice's brain, no label (:mod:`amecam_lib.baselines.cf`,
    :mod:`amecam_lib.losses.acwe`). Defaults: C&F's public code where it says (Adam 5e-4, batch 20,
    no augmentation, area weight 0.0005, no length term), ``unet_fsl``'s network and length of
    training otherwise.

    Attributes:
        channels: ``BasicUNet`` features, six numbers (MONAI's default; the presets scale it down).
        epochs, batch_size, lr, min_lr, weight_decay: Adam with the cosine schedule of every phase.
        flip: random left-right and front-back flips while training (C&F: none).
        patch_size: ``(h, w)`` random window of each batch (the energy's means are then the
            window's), or None: whole slices (C&F).
        norm: ``BasicUNet``'s normalisation, ``"batch"`` or ``"instance"``.
        area_weight: Chan-Vese's ``nu``, the weight of the inside's area (C&F's training script: 0.0005).
        length_weight: Chan-Vese's ``mu``, the weight of the contour's length (C&F's unsupervised loss: 0).
        max_slices: train on this many of the training slices (a fixed random subset, seeded by
            the preset's seed: :func:`amecam_lib.phases.slice_subset`), or None: all of them.
    """

    channels: tuple[int, ...] = (32, 32, 64, 128, 256, 32)
    epochs: int = 30
    batch_size: int = 20
    lr: float = 5e-4
    min_lr: float = 1e-5
    weight_decay: float = 0.0
    flip: bool = False
    patch_size: tuple[int, int] | None = None
    norm: str = "batch"
    area_weight: float = 0.0005
    length_weight: float = 0.0
    max_slices: int | None = None


@dataclass(frozen=True)
class CfFslConfig(CfUlConfig):
    """The supervised reference ``cf_fsl`` (paper Table 1 "FSL C&F (2020)"): the same network and
    L_ACWE as :class:`CfUlConfig` plus C&F's label term (the Active Contour loss of Chen et al.,
    CVPR 2019) on the training patients' whole-tumour masks: ``acwe_weight * L_ACWE + L_label``
    (C&F's "mode 4"). Reads masks for training (through
    :func:`amecam_lib.slices.read_training_masks_for_fully_supervised`).

    Attributes (beyond :class:`CfUlConfig`'s):
        acwe_weight: the weight of L_ACWE beside L_label (C&F's mode 4: 1).
        label_length_weight, label_region_weight: L_label's length and region weights (C&F: 1, 1).
    """

    acwe_weight: float = 1.0
    label_length_weight: float = 1.0
    label_region_weight: float = 1.0


@dataclass(frozen=True)
class C2amRefineConfig:
    """The class-agnostic activation head of ``avg_me_c2am`` (paper Table 2 "Avg. ME + C2AM";
    C2AM, Xie et al. CVPR 2022; :mod:`amecam_lib.baselines.c2am_refine`). Trained with Eq. 3 on the
    frozen classifier's stage-3 and stage-4 features of the train slices (no label, no mask); the
    loss's rank decay and clamp are ``AggregationConfig.rank_decay`` / ``sim_clamp``.

    Attributes:
        head_epochs, head_batch_size, head_lr: the head's training (Adam, cosine schedule).
    """

    head_epochs: int = 10
    head_batch_size: int = 64
    head_lr: float = 1e-3


@dataclass(frozen=True)
class LfiCamConfig:
    """The LFI-CAM baseline ``lfi_cam`` (paper Table 1, WSSS, "LFI-CAM (2021)"; Lee et al., ICCV 2021;
    :mod:`amecam_lib.baselines.lfi_cam`): a ResNet with LFI-CAM's Feature Importance Network and
    attention map, trained end to end on the train split's slice labels with the classification
    loss only (no mask). The ResNet's ``arch`` / ``norm`` are ``MultiExitConfig``'s, so the run's
    SupCon encoder fits it.

    Attributes:
        epochs, batch_size, lr, min_lr, weight_decay: Adam with the cosine schedule of every phase
            (the defaults are the multi-exit network's, the network it is compared with).
        init_from_pretrain: start the ResNet from the run's SupCon encoder (``pretrain/best.pt``, as
            the multi-exit network does) when it exists; the FIN and the classifier start at random.
        fin_hidden: width of the FIN's hidden convolutions; None = C, the feature maps' count (256
            for ResNet-18), the authors'.
        augment, crop_scale: the multi-exit network's batch augmentation (``MRIAugment``).
        max_train_slices: train on this many training slices, drawn once at random (seeded by
            ``Preset.seed``: :func:`amecam_lib.phases.slice_subset`); None = every training slice.
    """

    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-4
    min_lr: float = 5e-6
    weight_decay: float = 1e-5
    init_from_pretrain: bool = True
    fin_hidden: int | None = None
    augment: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.0)
    max_train_slices: int | None = None


@dataclass(frozen=True)
class SwinMilConfig:
    """The ``swin_mil`` reference row (paper Table 1 "Swin-MIL (2022)", type WSSS; Qian et al.,
    "Transformer based multiple instance learning for weakly supervised histopathology image
    segmentation", MICCAI 2022): a Swin Transformer with a side output per stage, trained from the
    slice labels only with the generalised-mean MIL loss and deep supervision
    (:mod:`amecam_lib.models.swin_mil`, :mod:`amecam_lib.losses.mil`, trained by
    :mod:`amecam_lib.baselines.swin_mil`). Random initial weights (the authors fine-tune an
    ImageNet Swin-T): see README "Departures".

    Attributes:
        embed_dim, depths, num_heads, window_size, patch_size, mlp_ratio: the Swin Transformer's
            (Swin-MIL: Swin-T's first three stages, 96, (2, 2, 6), (3, 6, 12), window 7, patch 4,
            MLP ratio 4); one side output per stage. Slices are padded with zeros to a multiple of
            ``patch_size * 2 ** (stages - 1) * window_size`` px.
        side_weights: the fixed fusion weights of the side outputs (the authors' 0.3, 0.4, 0.3);
            non-negative, sum 1.
        pool_exponent: ``r`` of the generalised-mean MIL pooling (the authors' 4).
        pool_region: the pixels of a slice that the MIL pooling averages: ``"slice"`` (every pixel,
            Swin-MIL's) or ``"brain"`` (slice > 0 only, ours; see :mod:`amecam_lib.losses.mil`).
        epochs, batch_size, lr, min_lr, weight_decay: Adam with the cosine schedule of every
            phase; ``weight_decay`` is the authors' 5e-4; the authors' lr (1e-5, side outputs
            1e-7) and batch 4 are for fine-tuning a pretrained Swin-T, so ours are larger and one lr.
        flip: random left-right and front-back flips of each batch while training.
        max_train_slices: train on at most this many training slices, a fixed random subset
            (seed ``Preset.seed``, the same share of each class: :func:`amecam_lib.phases.slice_subset`);
            None: every training slice.
    """

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6)
    num_heads: tuple[int, ...] = (3, 6, 12)
    window_size: int = 7
    patch_size: int = 4
    mlp_ratio: float = 4.0
    side_weights: tuple[float, ...] = (0.3, 0.4, 0.3)
    pool_exponent: float = 4.0
    pool_region: str = "slice"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 5e-4
    flip: bool = True
    max_train_slices: int | None = None


@dataclass(frozen=True)
class EvaluationConfig:
    """CAM -> mask -> scores (paper Sec. 2 end, 3.2; DenseCRF of Kraehenbuehl and Koltun 2011).

    CRF defaults are the authors' code: Gaussian sxy=3, compat=3; bilateral sxy=10, srgb=13,
    compat=10; 10 mean-field iterations. The authors' sxy are pixels of the 1 mm grid, so they are
    given here in mm (``*_sxy_mm``) and converted to pixels with each slice's spacing (the ``demo``
    preset: bilateral 20 mm, srgb 25). ``hd95_empty`` is the HD95, in mm, given when exactly one of
    prediction and ground truth is empty (the BraTS convention the authors used: 373.12866, their
    pixels of the 1 mm grid); it is never rescaled.
    """

    threshold: float = 0.5
    crf_gaussian_sxy_mm: float = 3.0
    crf_gaussian_compat: float = 3.0
    crf_bilateral_sxy_mm: float = 10.0
    crf_bilateral_srgb: float = 13.0
    crf_bilateral_compat: float = 10.0
    crf_iterations: int = 10
    hd95_empty: float = 373.12866
    score_cam_max_slices: int | None = None
    score_cam_batch_size: int = 128
    # "softmax": the CRF unary is -log softmax([1-p, p]) (authors' code); "probability": -log [1-p, p].
    crf_unary: str = "softmax"
    # "CAMs live in the brain" (label-free, every method alike): every map, the exit maps n(M_i) that
    # feed A, M_f and the final CAM included, is min-max normalised over the brain pixels (slice > 0)
    # only and is 0 outside. The attention network is trained with the same n(.) (train_attention
    # reads this field and stores it in A's checkpoint; loading an A trained with the other setting
    # for evaluation is an error). False: n(.) over the whole slice, the paper's.
    restrict_to_brain: bool = False
    # Label-free gating by the classifier's own slice prediction: on slices whose exit-4 tumour
    # probability is < 0.5 every method's mask is empty. Applied to all methods alike.
    gate_by_prediction: bool = False
    # Slices per forward pass when computing CAMs.
    batch_size: int = 32
    methods: tuple[str, ...] = (
        "ame_cam_crf", "ame_cam", "avg_me", "m_f", "exit1", "exit2", "exit3", "exit4", "exit2_3",
        "grad_cam", "layer_cam", "layer_cam_last", "score_cam", "swin_mil", "intensity", "avg_me_c2am", "lfi_cam", "unet_fsl",
        "cf_ul", "cf_fsl",
    )


@dataclass(frozen=True)
class ComputeConfig:
    """How the trainings use the hardware, one to many GPUs (``torchrun``); see
    :mod:`amecam_lib.distributed` and :func:`amecam_lib.training.fit`.

    The speed settings change how fast, not what is computed (up to floating-point rounding),
    and act on CUDA only: on the CPU every one of them is off, whatever the preset says.
    ``sync_batchnorm`` and the number of processes change the BatchNorm statistics, see below.
    None of them is stored in checkpoint configs, so a run may resume with other values (e.g. on
    another number of GPUs).

    Attributes:
        mixed_precision: autocast on CUDA, bfloat16 where the GPU supports it, else float16 with a
            gradient scaler (the SupCon similarities stay float32). Off on the CPU.
        channels_last: the networks in ``torch.channels_last`` memory format (faster convolutions
            on tensor cores). CUDA only.
        pin_memory: page-locked host memory for the loader's batches (faster, asynchronous copies
            to the GPU). CUDA only.
        cuda_num_workers: DataLoader worker processes per training process on CUDA; ``None``:
            :attr:`Preset.num_workers`, which is also what the CPU uses.
        lazy_slices: training reads each slice from the memory-mapped slice store when the
            loader asks for it (:meth:`amecam_lib.slices.SliceDataset.from_run`) instead of
            loading the split into memory first; the same slices in the same order. Always on under
            torchrun, so no process holds a copy of the split.
        sync_batchnorm: under torchrun on CUDA, BatchNorm layers normalise with the statistics of
            the *global* batch (``torch.nn.SyncBatchNorm``) instead of each GPU's share. Why the
            paper preset sets it: 8 GPUs then compute what one GPU with the whole batch computes
            (the paper's batch 512 is one batch), and SupCon cannot use per-GPU batch statistics
            to tell which slices share a GPU (SimCLR's "global BN"). Cost: one small all-reduce
            per BatchNorm layer and step. PyTorch's SyncBatchNorm is CUDA-only; on the CPU (gloo)
            each process uses its own statistics and a warning says so. One process: no effect.
    """

    mixed_precision: bool = True
    channels_last: bool = False
    pin_memory: bool = False
    cuda_num_workers: int | None = None
    lazy_slices: bool = False
    sync_batchnorm: bool = False


PAPER_COMPUTE = ComputeConfig(mixed_precision=True, channels_last=True, pin_memory=True, cuda_num_workers=8,
                              lazy_slices=True, sync_batchnorm=True)
"""The ``paper`` preset's :class:`ComputeConfig`: every GPU speed setting on, slices read lazily,
BatchNorm over the global batch."""


@dataclass(frozen=True)
class Preset:
    """One setting for every phase. Build with :func:`get_preset`; change with
    :meth:`with_overrides`."""

    name: str
    data: DataConfig = field(default_factory=DataConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    multi_exit: MultiExitConfig = field(default_factory=MultiExitConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    num_workers: int = 0
    seed: int = 0
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    unet_fsl: UnetFslConfig = field(default_factory=UnetFslConfig)
    c2am_refine: C2amRefineConfig = field(default_factory=C2amRefineConfig)
    lfi_cam: LfiCamConfig = field(default_factory=LfiCamConfig)
    cf_ul: CfUlConfig = field(default_factory=CfUlConfig)
    cf_fsl: CfFslConfig = field(default_factory=CfFslConfig)
    swin_mil: SwinMilConfig = field(default_factory=SwinMilConfig)

    PHASES = ("data", "pretrain", "multi_exit", "aggregation", "evaluation", "compute", "unet_fsl", "c2am_refine",
              "lfi_cam", "cf_ul", "cf_fsl", "swin_mil")

    def with_overrides(self, **overrides) -> "Preset":
        """Return a copy with the named fields replaced.

        A name may be ``phase.field`` (``"pretrain.epochs"``) or a bare field name, which must
        then exist in exactly one phase (``image_size``) or on the preset (``seed``). ``None``
        values are ignored, so papermill parameters left at ``None`` keep the preset's value.
        The geometry fields are applied together by :func:`with_geometry`: ``image_size``
        replaces a preset's crop, ``crop_size`` replaces its ``image_size``.

        Raises:
            KeyError: an unknown name, or a bare name found in several phases.
            ValueError: conflicting geometry (``image_size`` and ``crop_size`` both given).
        """
        preset = self
        geometry = {}
        for key, value in overrides.items():
            if value is None:
                continue
            if "." in key:
                phase, name = key.split(".", 1)
                if phase not in self.PHASES or name not in _field_names(getattr(preset, phase)):
                    raise KeyError(f"unknown setting {key!r}")
            elif key in ("num_workers", "seed"):
                preset = dataclasses.replace(preset, **{key: value})
                continue
            else:
                owners = [p for p in self.PHASES if key in _field_names(getattr(preset, p))]
                if len(owners) != 1:
                    raise KeyError(
                        f"setting {key!r} is {'unknown' if not owners else 'ambiguous'}; "
                        f"write it as phase.{key} with phase one of {self.PHASES}")
                phase, name = owners[0], key
            if phase == "data" and name in GEOMETRY_FIELDS:
                geometry[name] = value
                continue
            if isinstance(getattr(getattr(preset, phase), name), tuple) and isinstance(value, list):
                value = tuple(value)
            section = dataclasses.replace(getattr(preset, phase), **{name: value})
            preset = dataclasses.replace(preset, **{phase: section})
        if geometry:
            preset = dataclasses.replace(preset, data=with_geometry(preset.data, **geometry))
        return preset

    def to_dict(self) -> dict:
        """All settings as plain nested dicts (stored inside every checkpoint)."""
        return dataclasses.asdict(self)


def _field_names(section) -> set[str]:
    return {f.name for f in dataclasses.fields(section)}


def _paper() -> Preset:
    return Preset(name="paper", compute=PAPER_COMPUTE)


def _demo() -> Preset:
    # Every choice below that is not a plain size was decided on validation patients only, never on
    # the test patients: the 5 non-test sample patients, each in turn the validation patient of a
    # 4-train / 1-val split (3 such folds, FLAIR); the numbers are in README ("Validation study").
    # Choices scored with the validation patients' masks are marked "(val masks)".
    return Preset(
        name="demo",
        # Crop, don't shrink: a 160 x 192 window of the native 1 mm grid around the brain keeps the
        # paper's exit resolution in mm (4/8/16/32 mm per exit cell) at 1.9x the pixels of 128 px.
        # (val masks) Avg. ME Dice 0.46 at 128 px -> 0.66 with the crop, mean of 3 val patients.
        data=DataConfig(image_size=None, crop_size=(160, 192), min_brain_fraction=0.05, val_fraction=0.1,
                        test_fraction=0.25),
        pretrain=PretrainConfig(epochs=3, batch_size=64, lr=1e-3),
        # With one validation patient the last exit's AUC saturates at 1.0 after the first epoch
        # (measured: 1.0, 1.0, 0.998, 0.999, 0.997 while val accuracy went 0.39 -> 0.98), so
        # AUC cannot rank epochs here; the validation loss (slice labels only) can.
        multi_exit=MultiExitConfig(epochs=5, batch_size=32, lr=1e-3, select_by="val_loss"),
        # hidden=16 (paper: 32) and 6 epochs keep A's training to CPU minutes. C2AM's own feature
        # choice (frozen-encoder features) pooled over the brain only, so that "foreground = brain,
        # background = air" cannot satisfy Eq. 3. (val masks) pixels / encoder / encoder-in-brain
        # gave ame_cam 0.653 / 0.659 / 0.655: no measurable difference; chosen for the reason above.
        aggregation=AggregationConfig(epochs=6, batch_size=32, lr=1e-2, hidden=16, features="encoder",
                                      pool_region="brain"),
        # Score-CAM costs 512 forward passes per slice: 2 tumour + 2 normal slices in the demo.
        # restrict_to_brain (CAMs normalised over the brain, 0 outside; (val masks) exit 1 Dice 0.56
        # -> 0.64) and gate_by_prediction (label-free; lowered every method's FP area on normal val
        # slices). CRF appearance kernel 20 mm / 25 grey levels instead of the authors' 10 mm / 13:
        # (val masks) grid over sxy {10, 20, 40} mm x srgb {13, 25, 40, 60} x compat {5, 10, 20}:
        # Avg. ME + CRF 0.733 (authors') -> 0.829 (chosen; best 0.834 at compat 5).
        evaluation=EvaluationConfig(score_cam_max_slices=2, score_cam_batch_size=128, restrict_to_brain=True,
                                    gate_by_prediction=True, crf_bilateral_sxy_mm=20.0, crf_bilateral_srgb=25.0),
        # The references of notebook 05, sized for CPU minutes (measured in README "Reference rows").
        # (masks of the 5 non-test patients, leave-one-out) 3 epochs, flips only: Dice 0.685 (worst patient,
        # a far lower tumour contrast: 0.463); 6 epochs + intensity augmentation: 0.699 (0.516). README.
        unet_fsl=UnetFslConfig(channels=(8, 8, 16, 32, 64, 8), epochs=6, batch_size=16, lr=3e-3, patch_size=(96, 96)),
        c2am_refine=C2amRefineConfig(head_epochs=4, head_batch_size=32),
        # LFI-CAM (Table 1 row): 1 epoch on every training slice (479 FLAIR slices), FIN width 64: measured
        # 36 s wall on a quiet 2-core CPU (torch threads 2; 122-144 s while other jobs held the load at 4-6).
        # (val masks) FIN width 256 (the authors': C) 0.228 against 0.267 for 64 (val Dice, demo gating), so the
        # cheaper width was kept; 2 epochs on a random 240 of the slices: 0.479 against 0.501 for 1 epoch on all
        # (both gated by the multi-exit network of epoch 1, which called every val tumour slice tumour).
        lfi_cam=LfiCamConfig(epochs=1, batch_size=32, lr=1e-3, fin_hidden=64),
        # C&F (UL, FSL): 2 epochs each of an 8-channel U-Net on 96 x 96 patches at lr 3e-3 (C&F: 5e-4 for
        # 161 epochs, whole slices), all 479 FLAIR training slices. Measured (wall, 2 threads, FLAIR
        # 160 x 192, MONAI already imported, load about 2 from other jobs): cf_ul 13-26 s (with the
        # orientation pass), cf_fsl 8-10 s; 60-290 s each when other jobs load the 2 cores to 4-9.
        # (val masks), Dice on the val patient's tumour slices, no gating: UL / FSL 0.43 / 0.47 (FSL
        # seeds 1, 2: 0.46, 0.45); 1 epoch of a 4-channel U-Net: 0.33 / 0.49; UL 5 epochs: 0.39; whole
        # slices (C&F's), 2 epochs: 0.32 / 0.02 and FSL 5 epochs on patches: 0.08 (there FSL fits the 4
        # training patients, train-slice Dice 0.73, and predicts almost nothing on the val patient).
        cf_ul=CfUlConfig(channels=(8, 8, 16, 32, 64, 8), epochs=2, batch_size=16, lr=3e-3, patch_size=(96, 96)),
        cf_fsl=CfFslConfig(channels=(8, 8, 16, 32, 64, 8), epochs=2, batch_size=16, lr=3e-3, patch_size=(96, 96)),
        # Swin-MIL from scratch, one block per stage, 8 px patches and 6 x 6 windows (slices padded to
        # 192 x 192), 8 epochs of batch 8 on every training slice (479 FLAIR slices): measured 45 s wall with one
        # thread (5.2-6.4 s per epoch, load 2-3 from other jobs); with 2 threads the epochs without contention
        # took 3.8-5.9 s (about 30-45 s in all), the others 10-40x longer. MIL pooling over the brain
        # only, so that "brain = tumour" (scoring a slice by its brain area) cannot fit the labels: (val masks)
        # the val patient's Dice without gating, 0.279 / 0.297 (slice, seeds 0 / 1) -> 0.352 / 0.317 (brain).
        # Patch 4 px (0.248-0.268: the whole brain marked) and 12 epochs (0.299) were worse.
        swin_mil=SwinMilConfig(embed_dim=32, depths=(1, 1, 1), num_heads=(1, 2, 4), window_size=6, patch_size=8,
                               pool_region="brain", epochs=8, batch_size=8, lr=1e-3),
    )


def _smoke() -> Preset:
    return Preset(
        name="smoke",
        # The crop geometry at 0.4 zoom (64 x 77 px), so CI runs the crop path of every stage.
        data=DataConfig(image_size=None, crop_size=(160, 192), crop_zoom=0.4, min_brain_fraction=0.05,
                        val_fraction=0.1, test_fraction=0.25),
        pretrain=PretrainConfig(epochs=1, batch_size=32, lr=1e-3),
        multi_exit=MultiExitConfig(epochs=2, batch_size=32, lr=1e-3, select_by="val_loss"),
        aggregation=AggregationConfig(epochs=1, batch_size=32, lr=1e-2),
        evaluation=EvaluationConfig(score_cam_max_slices=2, score_cam_batch_size=64),
        unet_fsl=UnetFslConfig(channels=(4, 4, 8, 16, 32, 4), epochs=1, batch_size=32, lr=3e-3),
        c2am_refine=C2amRefineConfig(head_epochs=1, head_batch_size=32),
        lfi_cam=LfiCamConfig(epochs=1, batch_size=32, lr=1e-3, fin_hidden=8),
        cf_ul=CfUlConfig(channels=(4, 4, 8, 16, 32, 4), epochs=1, batch_size=32, lr=3e-3),
        cf_fsl=CfFslConfig(channels=(4, 4, 8, 16, 32, 4), epochs=1, batch_size=32, lr=3e-3),
        # 64 x 77 slices padded to 64 x 96 (multiples of 4 px * 2 ** 2 * window 2).
        swin_mil=SwinMilConfig(embed_dim=8, depths=(1, 1, 1), num_heads=(1, 2, 4), window_size=2, epochs=1,
                               batch_size=32, lr=1e-3),
    )


_PRESETS = {"paper": _paper, "demo": _demo, "smoke": _smoke}
PRESET_NAMES: tuple[str, ...] = tuple(_PRESETS)


def get_preset(name: str = "demo") -> Preset:
    """Return the named preset (``"smoke"``, ``"demo"`` or ``"paper"``).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESET_NAMES}") from None


def default_data_dir() -> "Path":
    """Folder holding the BraTS cases: ``$AMECAM_DATA_DIR`` if set, else the sample beside the
    repository (``../shared/data/brats_sample`` relative to the repository root)."""
    import os
    from pathlib import Path

    env = os.environ.get("AMECAM_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "brats_sample"
