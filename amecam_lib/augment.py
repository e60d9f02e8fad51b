"""Augmentations for grey MRI slices, applied to whole batches of tensors (on any device).

What makes sense for an axial brain slice in [0, 1]:

* random resized crop (area fraction 0.6..1, aspect 3/4..4/3): the tumour may be cut, which is fine
  for SupCon views; keep ``scale`` high for classification so a tumour rarely leaves the crop;
* horizontal (left-right) flip: the brain is near-symmetric left-right. Vertical flip is off by
  default: an upside-down brain is not a plausible scan;
* small rotation (+-10 degrees) for head position;
* intensity: multiplicative brightness, contrast around the brain's mean, gamma -- no hue (grey).
  Intensity changes apply inside the brain only (pixels > 0 after the geometric warp), so the
  zero background of skull-stripped scans stays zero; the output is clamped to [0, 1].

Crop, flip and rotation are composed into one affine matrix per slice and applied in a single
``grid_sample`` (bilinear, zero padding) for the whole batch. The matrix is built in pixel units
and converted to ``affine_grid``'s normalised coordinates (:func:`sampling_matrices`), so a
non-square ``H x W`` slice (a crop around the brain) is rotated rigidly, not sheared; crop sizes
are fractions of each side, so ``crop_ratio`` is relative to the slice's own aspect. Written here, not taken from
torchvision.transforms.v2, because v2 draws one parameter set per call: a batch would get the same
crop for every slice, and a per-slice Python loop is what keeps a 2-core loader slow. The random
parameters are drawn on the CPU from ``generator`` (or torch's global RNG), so results are
reproducible and identical on CPU and GPU for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MRIAugment:
    """Random crop/flip/rotation + intensity jitter for batches of grey slices.

    Args:
        crop_scale: range of the crop's area as a fraction of the slice.
        crop_ratio: range of the crop's aspect ratio (width / height) relative to the slice's
            (1 keeps the slice's own aspect).
        hflip_p, vflip_p: probabilities of a left-right / up-down flip.
        max_rotation_deg: rotation drawn uniformly in +-this, degrees.
        brightness: intensities multiplied by a factor in ``1 +- brightness``.
        contrast: deviations from the brain mean multiplied by ``1 +- contrast``.
        gamma: ``x ** g`` with ``log g`` uniform in ``+- log(gamma)`` (gamma >= 1).

    ``augment(images, generator=None)``: ``images (B, 1, H, W)`` or ``(1, H, W)`` float in [0, 1]
    -> same shape and dtype, in [0, 1].
    """

    crop_scale: tuple[float, float] = (0.6, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_p: float = 0.5
    vflip_p: float = 0.0
    max_rotation_deg: float = 10.0
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: float = 1.2

    def __post_init__(self):
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        for name in ("hflip_p", "vflip_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not (0 <= self.brightness < 1 and 0 <= self.contrast < 1 and self.gamma >= 1
                and self.max_rotation_deg >= 0):
            raise ValueError("need 0 <= brightness < 1, 0 <= contrast < 1, gamma >= 1, max_rotation_deg >= 0")

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        single = images.ndim == 3
        batch_images = images[None] if single else images
        if batch_images.ndim != 4:
            raise ValueError(f"images must be (B, C, H, W) or (C, H, W), got {tuple(images.shape)}")
        warped = self._geometric(batch_images, generator)
        augmented = self._intensity(warped, generator)
        return augmented[0] if single else augmented

    def _uniform(self, batch: int, low: float, high: float, generator) -> torch.Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    def _geometric(self, images: torch.Tensor, generator) -> torch.Tensor:
        batch = images.shape[0]
        area = self._uniform(batch, *self.crop_scale, generator)
        log_ratio = self._uniform(batch, math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), generator)
        ratio = log_ratio.exp()
        # Crop width and height as fractions of the slice side; at most the whole slice.
        crop_w = (area * ratio).sqrt().clamp(max=1.0)
        crop_h = (area / ratio).sqrt().clamp(max=1.0)
        # Crop centre in normalised coordinates [-1, 1], kept inside the slice.
        centre_x = (1 - crop_w) * (2 * torch.rand(batch, generator=generator) - 1)
        centre_y = (1 - crop_h) * (2 * torch.rand(batch, generator=generator) - 1)
        hflip = torch.where(torch.rand(batch, generator=generator) < self.hflip_p, -1.0, 1.0)
        vflip = torch.where(torch.rand(batch, generator=generator) < self.vflip_p, -1.0, 1.0)
        angle = torch.deg2rad(self._uniform(batch, -self.max_rotation_deg, self.max_rotation_deg, generator))
        theta = sampling_matrices(crop_w * hflip, crop_h * vflip, centre_x, centre_y, angle,
                                  tuple(images.shape[-2:]))
        theta = theta.to(device=images.device, dtype=torch.float32)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False).to(images.dtype)

    def _intensity(self, images: torch.Tensor, generator) -> torch.Tensor:
        batch = images.shape[0]
        shape = (batch,) + (1,) * (images.ndim - 1)
        gamma = self._uniform(batch, -math.log(self.gamma), math.log(self.gamma), generator).exp()
        brightness = self._uniform(batch, 1 - self.brightness, 1 + self.brightness, generator)
        contrast = self._uniform(batch, 1 - self.contrast, 1 + self.contrast, generator)
        gamma, brightness, contrast = (value.to(images.device).view(shape) for value in (gamma, brightness, contrast))
        brain = images > 0
        adjusted = images.clamp(0, 1) ** gamma
        brain_pixels = brain.sum(dim=(1, 2, 3), keepdim=True).clamp(min=1)
        brain_mean = (adjusted * brain).sum(dim=(1, 2, 3), keepdim=True) / brain_pixels
        adjusted = ((adjusted - brain_mean) * contrast + brain_mean) * brightness
        return torch.where(brain, adjusted.clamp(0, 1), torch.zeros_like(adjusted))


def sampling_matrices(scale_x: torch.Tensor, scale_y: torch.Tensor, centre_x: torch.Tensor,
                      centre_y: torch.Tensor, angle: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``affine_grid`` matrices ``(B, 2, 3)``: output pixel ``p`` samples the input at
    ``R(angle) diag(scale) p + centre``, the rotation taken in pixel units.

    ``affine_grid`` works in normalised coordinates, ``x = 2 col / W - 1`` and
    ``y = 2 row / H - 1`` (up to half a pixel), so a pixel offset ``q`` is ``D^-1 q`` with
    ``D = diag(W / 2, H / 2)``. A rigid rotation in pixels is ``D^-1 R D`` in normalised units:
    ``[[cos, -sin H / W], [sin W / H, cos]]``; on a square slice it is ``R`` itself.

    Args:
        scale_x, scale_y: ``(B,)`` crop fraction of each side times the flip sign (-1 flips).
        centre_x, centre_y: ``(B,)`` crop centre in normalised coordinates, in [-1, 1].
        angle: ``(B,)`` rotation in radians.
        shape: ``(H, W)`` of the slices.
    """
    height, width = shape
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos * scale_x, -sin * scale_y * (height / width), centre_x], dim=1),
                        torch.stack([sin * scale_x * (width / height), cos * scale_y, centre_y], dim=1)], dim=1)


@dataclass(frozen=True)
class TwoViews:
    """Two independent augmentations of each slice, for SupCon / SimCLR.

    ``views(images (B, 1, H, W), generator=None)`` -> ``(B, 2, 1, H, W)``; a single ``(1, H, W)``
    slice gives ``(2, 1, H, W)``.
    """

    augment: MRIAugment = MRIAugment()

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([self.augment(images, generator), self.augment(images, generator)],
                           dim=0 if images.ndim == 3 else 1)
