"""SSL augmentations (SwAV/SimSiam CIFAR recipe; BYOL/SimCLR blur, solarization) as batched tensor ops.

The whole uint8 training subset sits on the training device; each step draws a batch of indices
and `BatchAugment` turns it into normalised float views with a handful of kernels, no per-image
Python or PIL work. The same code runs on CPU and GPU.

Pipeline, as torchvision.transforms.v2 would apply it per image:
RandomResizedCrop(size, scale, ratio) -> RandomHorizontalFlip(flip_p)
-> RandomApply(ColorJitter(brightness, contrast, saturation, hue), jitter_p)
-> RandomGrayscale(grayscale_p) -> RandomApply(GaussianBlur(blur kernel, (blur_sigma_min, blur_sigma_max)),
blur_p[view]) -> RandomSolarize(solarize_threshold, solarize_p[view]) -> Normalize(mean, std).

Blur and solarization probabilities are per view (BYOL: blur 1.0 / 0.1, solarize 0.0 / 0.2 for its
two views): view v uses p[v % len(p)]. Both are off by default, and off they draw no random numbers,
so the default views are bit-identical to those of the code before they existed.

Deviations from torchvision, all deliberate:
- The four colour-jitter ops run in one random order per *batch* (torchvision draws one order per
  image): a per-image order would need every op evaluated at every position (4x the work).
  Factors, the apply decision and the grayscale decision are still drawn per image.
- Crop and colour ops work in float32 on [0, 1] without rounding to uint8 between steps.
- Crop + resize is one batched separable resampling: out = Wy @ image @ Wx^T with per-image
  (size x H) and (size x W) weight matrices holding torchvision's antialiased bilinear filter
  restricted to the crop (so borders clamp to the crop's edge pixels as in crop-then-resize), and
  the horizontal flip folded into Wx. torchvision.ops.roi_align would sample outside the crop at
  its borders and does not antialias like torchvision's resize, hence the matrices.
- The Gaussian blur is applied separably (a row pass, then a column pass, each with reflect
  padding); torchvision convolves with the outer-product 2-D kernel. Same result up to float
  rounding, k instead of k^2 multiply-adds per pixel.
- Crop sampling is torchvision's rejection scheme, vectorised: all 10 attempts are drawn for every
  image at once and the first accepted one is used (the center-crop fallback when none is), which
  gives the same distribution as torchvision's sequential loop.

Every random number comes from the caller's `torch.Generator`, so the same generator state gives
the same views (checkpoint-resume equivalence). CPU and CUDA generators give different streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from imbssl import UserError

CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before its center-crop fallback
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # ColorJitter's op ids


@dataclass
class AugmentConfig:
    """Augmentation settings; defaults are the SwAV/SimSiam CIFAR recipe."""

    crop_min_scale: float = 0.2  # smallest random crop, as a share of the image's area
    crop_max_scale: float = 1.0  # largest random crop, as a share of the image's area
    crop_min_ratio: float = 3 / 4  # smallest width / height of a random crop
    crop_max_ratio: float = 4 / 3  # largest width / height of a random crop
    flip_p: float = 0.5  # probability of a horizontal flip
    jitter_p: float = 0.8  # probability of the colour jitter (brightness, contrast, saturation, hue)
    brightness: float = 0.4  # jitter brightness factor drawn from [max(0, 1 - v), 1 + v]
    contrast: float = 0.4  # jitter contrast factor drawn from [max(0, 1 - v), 1 + v]
    saturation: float = 0.4  # jitter saturation factor drawn from [max(0, 1 - v), 1 + v]
    hue: float = 0.1  # jitter hue shift drawn from [-v, v] (in turns of the colour wheel)
    grayscale_p: float = 0.2  # probability of converting a view to grayscale
    # Per view, view v uses blur_p[v % len(blur_p)]; [0.0] = off (the SimSiam CIFAR recipe has no blur).
    blur_p: list[float] = field(default_factory=lambda: [0.0])
    blur_kernel: int = 0  # odd kernel size in px; 0 = image_size // 20 * 2 + 1 (PatrickHua/SimSiam's rule)
    blur_sigma_min: float = 0.1  # torchvision's GaussianBlur sigma=(0.1, 2.0), SimCLR's and BYOL's range
    blur_sigma_max: float = 2.0  # largest blur standard deviation in px (sigma uniform in [min, max])
    solarize_p: list[float] = field(default_factory=lambda: [0.0])  # per view, as blur_p; [0.0] = off
    solarize_threshold: float = 0.5  # on [0, 1]: torchvision's RandomSolarize(128) on uint8, BYOL's 0.5

    def __post_init__(self) -> None:
        # The config check (config_check.augment_error and the schema) has checked every value.
        # Lists of probabilities become floats: [1] and [1.0] are one setting (one run fingerprint).
        self.blur_p = [float(p) for p in self.blur_p]
        self.solarize_p = [float(p) for p in self.solarize_p]

    def view_probabilities(self, view: int) -> tuple[float, float]:
        """(blur probability, solarization probability) of view `view` (0 = the first view)."""
        return self.blur_p[view % len(self.blur_p)], self.solarize_p[view % len(self.solarize_p)]

    def blur_kernel_size(self, image_size: int) -> int:
        """The blur's kernel size at this output size: ~10% of the image, odd (3 px at 32, 23 at 224)."""
        return self.blur_kernel or image_size // 20 * 2 + 1


def torchvision_pipeline(config: AugmentConfig, mean, std, image_size: int):
    """The same augmentations as torchvision.transforms.v2 applies them, one image at a time, on a
    uint8 CHW tensor: the conventional pipeline that `BatchAugment` replaces (the benchmark's
    reference)."""
    from torchvision.transforms import v2

    c = config
    blur_p, solarize_p = c.view_probabilities(0)
    # Blur and solarization join only when on, so that the default pipeline (and the global RNG
    # draws it makes) stays the one the benchmark measured before they existed.
    blur = [v2.RandomApply([v2.GaussianBlur(c.blur_kernel_size(image_size), (c.blur_sigma_min, c.blur_sigma_max))],
                           p=blur_p)] if blur_p > 0 else []
    # On uint8, threshold * 255 solarizes exactly the pixels whose x / 255 >= threshold.
    solarize = [v2.RandomSolarize(c.solarize_threshold * 255, p=solarize_p)] if solarize_p > 0 else []
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(c.crop_min_scale, c.crop_max_scale),
                             ratio=(c.crop_min_ratio, c.crop_max_ratio), antialias=True),
        v2.RandomHorizontalFlip(c.flip_p),
        v2.RandomApply([v2.ColorJitter(c.brightness, c.contrast, c.saturation, c.hue)], p=c.jitter_p),
        v2.RandomGrayscale(p=c.grayscale_p),
        *blur,
        *solarize,
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(map(float, mean)), list(map(float, std))),
    ])


@dataclass
class AugmentParams:
    """The random choices for one batch (what `BatchAugment.sample_params` draws)."""

    boxes: Tensor  # (N, 4) float: left, top, right, bottom in pixel-edge coordinates (integers)
    flip: Tensor  # (N,) bool
    jitter: Tensor  # (N,) bool: colour jitter applied to this image
    factors: Tensor  # (N, 4) float: brightness, contrast, saturation, hue factors
    order: list[int]  # jitter op order for the whole batch (BRIGHTNESS..HUE ids)
    gray: Tensor  # (N,) bool
    # None where the view's probability is 0: nothing drawn, nothing applied.
    blur: Tensor | None = None  # (N,) bool
    sigma: Tensor | None = None  # (N,) float: the blur's standard deviation in pixels
    solarize: Tensor | None = None  # (N,) bool


def centre_crop(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """The central size x size pixels of NCHW images (torchvision's CenterCrop rounding); the
    evaluation view of images stored larger than the model's input (store_size > image_size)."""
    height, width = images.shape[-2:]
    if size is None or (height, width) == (size, size):
        return images
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return images[..., top:top + size, left:left + size]


def resize_centre_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The reference code's test view (PatrickHua/SimSiam augmentations/eval_aug.py): the shorter
    side resized to int(size * 8 / 7) (36 px for 32) with a bicubic filter, then the central size x
    size pixels; uint8 NCHW in, uint8 out (torchvision's own resize, on the whole batch)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    resized = F.resize(images, [int(size * 8 / 7)], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return centre_crop(resized, size)


def evaluation_view(test_transform: str, size: int | None):
    """uint8 NCHW images -> the un-augmented view evaluation sees: the centre crop of the stored
    images (`none`), or the reference's bicubic resize then centre crop (`resize_crop`)."""
    if test_transform == "resize_crop" and size is not None:
        return lambda images: resize_centre_crop(images, size)
    return lambda images: centre_crop(images, size)


def _channel_stats(mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, device) -> tuple[Tensor, Tensor]:
    as_tensor = lambda v: torch.as_tensor(v, dtype=torch.float32, device=device).reshape(1, 3, 1, 1)
    return as_tensor(mean), as_tensor(std)


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise TypeError(f"expected uint8 images of shape (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")


def normalize(images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> Tensor:
    """Evaluation input: uint8 (N, 3, H, W) -> float32 (x / 255 - mean) / std, no augmentation."""
    _check_images(images)
    mean_t, std_t = _channel_stats(mean, std, images.device)
    return images.float().div_(255).sub_(mean_t).div_(std_t)


def grayscale(x: Tensor) -> Tensor:
    """Luma of float RGB images (N, 3, H, W) -> (N, 1, H, W), torchvision's weights."""
    r, g, b = x.unbind(1)
    return (r * GRAY_WEIGHTS[0] + g * GRAY_WEIGHTS[1] + b * GRAY_WEIGHTS[2]).unsqueeze(1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    # torchvision's _blend with a per-image factor (N, 1, 1, 1).
    # lerp == factor * x + (1 - factor) * other, in one kernel.
    return torch.lerp(other.expand_as(x), x, factor).clamp_(0, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Per-image brightness: x * factor, clipped. x float (N, 3, H, W) in [0, 1], factor (N,)."""
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Per-image contrast: blend with the mean luma of the image."""
    return _blend(x, grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor.view(-1, 1, 1, 1))


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Per-image saturation: blend with the image's own luma."""
    return _blend(x, grayscale(x), factor.view(-1, 1, 1, 1))


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Per-image hue shift (in turns) in HSV, torchvision's RGB<->HSV definitions.

    Works in hue sectors (hue * 6). HSV -> RGB uses the closed form
    channel_n = V - V*S*clamp(min(k, 4 - k), 0, 1), k = (n + 6*hue) mod 6, n = 5, 3, 1 for R, G, B,
    which equals torchvision's sector table; with V = max and V*S = max - min it needs neither S
    nor a gather.
    """
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(dim=1), x.amin(dim=1)
    delta = maxc - minc
    # torchvision's priority: max == r, else max == g, else b. Grey pixels (delta 0, max == r) get hue 0.
    sector = torch.where(maxc == r, g - b, torch.where(maxc == g, 2 * delta + b - r, 4 * delta + r - g))
    sector = sector / torch.where(delta > 0, delta, torch.ones_like(delta)) + 6 * shift.view(-1, 1, 1)
    offsets = torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    k = offsets + sector.unsqueeze(1)
    k = k - 6 * torch.floor(k / 6)  # mod 6
    weight = torch.minimum(k, 4 - k).clamp_(0, 1)
    return (maxc.unsqueeze(1) - delta.unsqueeze(1) * weight).clamp_(0, 1)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """(N, kernel_size) normalised 1-D Gaussians, one per sigma (N,): torchvision's
    _get_gaussian_kernel1d, whose linspace over +-(k - 1) / (2 sqrt 2) and softmax of -(x / sigma)^2
    is exp(-t^2 / (2 sigma^2)) at integer offsets t, divided by its sum."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=kernel_size, dtype=sigma.dtype, device=sigma.device)
    return torch.softmax(x.view(1, -1).div(sigma.view(-1, 1)).pow(2).neg(), dim=1)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Per-image Gaussian blur of float images (N, C, H, W) with sigma (N,), torchvision's
    gaussian_blur (reflect padding) done separably.

    The batch becomes one image of N * C channels, so that a depthwise (grouped) convolution gives
    every channel its own image's kernel: two kernels per batch, no per-image loop.
    """
    n, c, h, w = x.shape
    if n == 0 or kernel_size == 1:  # a 1-tap Gaussian is the identity
        return x
    kernel = gaussian_kernels(sigma, kernel_size).repeat_interleave(c, dim=0)  # (N * C, k)
    pad = kernel_size // 2
    flat = x.reshape(1, n * c, h, w)
    flat = torch.nn.functional.pad(flat, (pad, pad, 0, 0), mode="reflect")
    flat = torch.nn.functional.conv2d(flat, kernel.view(n * c, 1, 1, kernel_size), groups=n * c)  # rows
    flat = torch.nn.functional.pad(flat, (0, 0, pad, pad), mode="reflect")
    flat = torch.nn.functional.conv2d(flat, kernel.view(n * c, 1, kernel_size, 1), groups=n * c)  # columns
    return flat.view(n, c, h, w)


def solarize(x: Tensor, threshold: float) -> Tensor:
    """Pixels >= threshold become 1 - x (torchvision's solarize on floats in [0, 1])."""
    return torch.where(x >= threshold, 1 - x, x)


def _resize_weights(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """(N, out_size, in_size) matrices that crop [start, start + length) and resize it to out_size.

    torchvision's antialiased bilinear resize (PIL's scheme): output pixel i samples around
    center = start + (i + 0.5) * scale with a triangle filter widened by the scale when shrinking,
    over the crop's pixels only, weights normalised to sum 1. When enlarging this is plain bilinear
    interpolation with the crop's edge pixels repeated.
    """
    scale = (length / out_size).view(-1, 1, 1)
    out_pos = torch.arange(out_size, device=start.device, dtype=torch.float32).view(1, -1, 1)
    in_pos = torch.arange(in_size, device=start.device, dtype=torch.float32).view(1, 1, -1)
    center = start.view(-1, 1, 1) + (out_pos + 0.5) * scale
    weight = (1 - ((in_pos + 0.5 - center) / scale.clamp(min=1)).abs()).clamp_(min=0)
    inside = (in_pos >= start.view(-1, 1, 1)) & (in_pos < (start + length).view(-1, 1, 1))
    weight = weight * inside
    return weight / weight.sum(dim=2, keepdim=True)


_JITTER_OPS = {
    BRIGHTNESS: adjust_brightness,
    CONTRAST: adjust_contrast,
    SATURATION: adjust_saturation,
    HUE: adjust_hue,
}


class BatchAugment:
    """`aug(images_uint8_nchw, generator) -> float32 (N, 3, image_size, image_size)`, normalised."""

    # Uniform numbers drawn per image, in this order (one torch.rand call per batch).
    _CROP = slice(0, 4 * CROP_ATTEMPTS)  # per attempt: scale, log-ratio, top, left
    _FLIP, _JITTER, _GRAY = 4 * CROP_ATTEMPTS, 4 * CROP_ATTEMPTS + 1, 4 * CROP_ATTEMPTS + 2
    _FACTORS = slice(4 * CROP_ATTEMPTS + 3, 4 * CROP_ATTEMPTS + 7)
    _UNIFORMS = 4 * CROP_ATTEMPTS + 7
    # Blur and solarization draw in a second call, made only for views where either can apply: the
    # first call's layout (and with it every default view) stays what it was before they existed.
    _BLUR, _SIGMA, _SOLARIZE = range(3)
    _BLUR_UNIFORMS = 3

    def __init__(self, config: AugmentConfig, mean, std, image_size: int):
        self.config = config
        self.image_size = int(image_size)
        self._mean_std = _channel_stats(mean, std, "cpu")
        self._mean_std_on: dict[object, tuple[Tensor, Tensor]] = {}  # per-device copies
        c = config
        # ColorJitter's ranges: [max(0, 1 - v), 1 + v] for b/c/s and [-hue, hue].
        lows = [max(0.0, 1 - c.brightness), max(0.0, 1 - c.contrast), max(0.0, 1 - c.saturation), -c.hue]
        highs = [1 + c.brightness, 1 + c.contrast, 1 + c.saturation, c.hue]
        self._factor_low = torch.tensor(lows)
        self._factor_span = torch.tensor(highs) - self._factor_low
        self.blur_kernel = c.blur_kernel_size(self.image_size)
        if any(p > 0 for p in c.blur_p) and self.blur_kernel // 2 >= self.image_size:
            raise UserError(f"augment.blur_kernel {self.blur_kernel} is too large for {self.image_size} px views: "
                            f"reflect padding needs blur_kernel // 2 < the image size")

    def __call__(self, images: Tensor, generator: torch.Generator,
                 host_generator: torch.Generator | None = None, *, view: int = 0) -> Tensor:
        _check_images(images)
        params = self.sample_params(images.shape[0], images.shape[2], images.shape[3], generator, host_generator,
                                    view=view)
        return self.apply(images, params)

    def sample_params(self, n: int, height: int, width: int, generator: torch.Generator,
                      host_generator: torch.Generator | None = None, *, view: int = 0) -> AugmentParams:
        """Draw every random choice for a batch of n images of size height x width, for view
        `view` of a step (it picks the blur and solarization probabilities).

        The jitter order is a Python list; drawing it from a CPU `host_generator` avoids a
        device-to-host synchronisation per call when `generator` lives on a GPU.
        """
        device = generator.device
        u = torch.rand(n, self._UNIFORMS, generator=generator, device=device)
        order_gen = host_generator if host_generator is not None else generator
        order = torch.randperm(4, generator=order_gen, device=order_gen.device).tolist()  # one order per batch
        low, span = self._factor_range_on(device)
        c = self.config
        params = AugmentParams(
            boxes=self._crop_boxes(u[:, self._CROP].view(n, CROP_ATTEMPTS, 4), height, width),
            flip=u[:, self._FLIP] < c.flip_p,
            jitter=u[:, self._JITTER] < c.jitter_p,
            gray=u[:, self._GRAY] < c.grayscale_p,
            factors=low + span * u[:, self._FACTORS],
            order=order,
        )
        blur_p, solarize_p = c.view_probabilities(view)
        if blur_p > 0 or solarize_p > 0:
            # After the first draws, so a view's crop, flip and colours do not depend on these settings.
            b = torch.rand(n, self._BLUR_UNIFORMS, generator=generator, device=device)
            if blur_p > 0:
                params.blur = b[:, self._BLUR] < blur_p
                params.sigma = c.blur_sigma_min + (c.blur_sigma_max - c.blur_sigma_min) * b[:, self._SIGMA]
            if solarize_p > 0:
                params.solarize = b[:, self._SOLARIZE] < solarize_p
        return params

    def _crop_boxes(self, u: Tensor, height: int, width: int) -> Tensor:
        """torchvision's RandomResizedCrop.make_params for all images and all attempts at once."""
        c = self.config
        target_area = height * width * (c.crop_min_scale + (c.crop_max_scale - c.crop_min_scale) * u[..., 0])
        log_lo, log_hi = math.log(c.crop_min_ratio), math.log(c.crop_max_ratio)
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
        w = torch.sqrt(target_area * aspect).round_()  # round half to even, like Python's round
        h = torch.sqrt(target_area / aspect).round_()
        top = torch.minimum((u[..., 2] * (height - h + 1)).floor_(), height - h)  # randint(0, H - h + 1)
        left = torch.minimum((u[..., 3] * (width - w + 1)).floor_(), width - w)
        accepted = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = accepted.to(torch.uint8).argmax(dim=1, keepdim=True)  # first accepted attempt
        pick = lambda t: t.gather(1, first).squeeze(1)
        fallback = torch.tensor(self._center_crop(height, width), dtype=u.dtype, device=u.device)
        box = torch.stack([pick(left), pick(top), pick(left + w), pick(top + h)], dim=1)
        return torch.where(accepted.any(dim=1, keepdim=True), box, fallback)

    def _center_crop(self, height: int, width: int) -> list[float]:
        """torchvision's fallback when all attempts fail: the largest center crop within the ratio range."""
        c = self.config
        in_ratio = width / height
        if in_ratio < c.crop_min_ratio:
            w, h = width, int(round(width / c.crop_min_ratio))
        elif in_ratio > c.crop_max_ratio:
            w, h = int(round(height * c.crop_max_ratio)), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return [left, top, left + w, top + h]

    def apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Apply drawn parameters: crop+resize, flip, colour jitter, grayscale, blur, solarize, normalise."""
        with torch.autocast(images.device.type, enabled=False):  # float32 even inside a bf16 training step
            return self._apply(images, params)

    def _apply(self, images: Tensor, params: AugmentParams) -> Tensor:
        left, top, right, bottom = params.boxes.unbind(1)
        rows = _resize_weights(top, bottom - top, images.shape[2], self.image_size)
        cols = _resize_weights(left, right - left, images.shape[3], self.image_size)
        cols = torch.where(params.flip.view(-1, 1, 1), cols.flip(1), cols)  # flip = reversed output columns
        x = torch.einsum("nsh,nchw,ntw->ncst", rows, images.float(), cols).div_(255).clamp_(0, 1)
        # Ops that can never apply (probability 0, e.g. the linear probe's crop + flip) are skipped.
        if self.config.jitter_p > 0:
            jittered = x
            for op in params.order:
                jittered = _JITTER_OPS[op](jittered, params.factors[:, op])
            x = torch.where(params.jitter.view(-1, 1, 1, 1), jittered, x)
        if self.config.grayscale_p > 0:
            x = torch.where(params.gray.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
        if params.blur is not None:
            x = torch.where(params.blur.view(-1, 1, 1, 1), gaussian_blur(x, params.sigma, self.blur_kernel), x)
        if params.solarize is not None:
            x = torch.where(params.solarize.view(-1, 1, 1, 1), solarize(x, self.config.solarize_threshold), x)
        mean, std = self._stats_on(images.device)
        return x.sub_(mean).div_(std)

    def _factor_range_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        key = ("factors", device)
        if key not in self._mean_std_on:
            self._mean_std_on[key] = (self._factor_low.to(device), self._factor_span.to(device))
        return self._mean_std_on[key]

    def _stats_on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._mean_std_on:
            self._mean_std_on[device] = tuple(t.to(device) for t in self._mean_std)
        return self._mean_std_on[device]
