"""Batched augmentations vs torchvision.transforms.v2 applied per image.

Exact checks (same parameters -> same pixels) for crop/resize/flip, each colour op, the Gaussian
blur and solarization, and statistical checks (fixed seeds, tolerances of about 4 standard errors)
for the random choices, per view where the probabilities are per view.
"""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml
from scipy.stats import ks_2samp
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from imbssl import UserError
from imbssl.config_check import augment_error, config_error
from imbssl.data.augment import (AugmentConfig, BatchAugment, adjust_brightness, adjust_contrast, adjust_hue,
                                 adjust_saturation, gaussian_blur, grayscale, normalize, solarize, torchvision_pipeline)
from imbssl.methods.registry import Method, MethodConfig

torch.set_num_threads(1)

SIZE = 32
NO_COLOUR = AugmentConfig(jitter_p=0.0, grayscale_p=0.0)

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())


def identity_aug(config=AugmentConfig(), size=SIZE):
    """Augmenter with mean 0, std 1, so that outputs are images in [0, 1]."""
    return BatchAugment(config, mean=[0.0] * 3, std=[1.0] * 3, image_size=size)


def colourful_images(n, seed, size=SIZE):
    """Random 4x4 blocks of saturated-ish colours, upsampled: contrast, hue and saturation all matter."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=g)
    return blocks.repeat_interleave(size // 4, 2).repeat_interleave(size // 4, 3)


def ramp_image(size=SIZE):
    """Red encodes the column, green the row: the output reveals where the crop came from."""
    pos = torch.arange(size) * (256 // size) + (128 // size)
    red = pos.view(1, -1).expand(size, size)
    green = pos.view(-1, 1).expand(size, size)
    return torch.stack([red, green, torch.full((size, size), 128)]).to(torch.uint8)


def crop_geometry(out):
    """(width fraction, height fraction, flipped) of crops rendered from `ramp_image`, out in [0, 1]."""
    dx = out[:, 0, :, -1] - out[:, 0, :, 0]  # per row: red at the right edge minus left edge
    dy = out[:, 1, -1, :] - out[:, 1, 0, :]
    step = (256 // SIZE) / 255  # ramp step per source pixel
    width = dx.mean(1).abs() / step + 1
    height = dy.mean(1) / step + 1
    return width / SIZE, height / SIZE, dx.mean(1) < 0


def torchvision_boxes(n, height, width, seed, scale=(0.2, 1.0)):
    torch.manual_seed(seed)
    crop = v2.RandomResizedCrop(SIZE, scale=scale)
    image = torch.zeros(3, height, width, dtype=torch.uint8)
    boxes = []
    for _ in range(n):
        p = crop.make_params([image])
        boxes.append([p["left"], p["top"], p["left"] + p["width"], p["top"] + p["height"]])
    return torch.tensor(boxes, dtype=torch.float32)


def our_boxes(n, height, width, seed, config=AugmentConfig()):
    return identity_aug(config).sample_params(n, height, width, torch.Generator().manual_seed(seed)).boxes


def area_and_log_ratio(boxes, height, width):
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return (w * h / (height * width)).numpy(), torch.log(w / h).numpy()


# ---------------------------------------------------------------------------------------- basics


@pytest.mark.parametrize("in_hw,size", [((32, 32), 32), ((32, 32), 16), ((24, 40), 20)])
def test_output_shape_dtype_and_finite(in_hw, size):
    images = torch.randint(0, 256, (6, 3, *in_hw), dtype=torch.uint8)
    out = BatchAugment(AugmentConfig(), [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], size)(images, torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, size, size)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    pixels = out * std + mean  # back to [0, 1]: every op clamps there before normalisation
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    # A constant colour stays that colour whatever the crop and flip: (value / 255 - mean) / std
    # per channel, in channel order.
    colour = torch.tensor([200, 100, 50], dtype=torch.uint8).view(1, 3, 1, 1).expand(6, 3, *in_hw).contiguous()
    flat = BatchAugment(NO_COLOUR, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], size)(colour, torch.Generator().manual_seed(0))
    expected = ((torch.tensor([200.0, 100.0, 50.0]).view(1, 3, 1, 1) / 255 - mean) / std).expand(6, 3, size, size)
    torch.testing.assert_close(flat, expected, atol=1e-5, rtol=0)


def test_same_generator_state_gives_same_views_other_seed_differs():
    images = colourful_images(16, seed=1)
    aug = BatchAugment(AugmentConfig(), [0.5] * 3, [0.25] * 3, SIZE)
    first = aug(images, torch.Generator().manual_seed(7))
    again = aug(images, torch.Generator().manual_seed(7))
    other = aug(images, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert (first - other).abs().amax(dim=(1, 2, 3)).min() > 0.01  # every view differs


def test_normalize_is_exactly_scaled_and_standardised():
    images = torch.randint(0, 256, (5, 3, 7, 9), dtype=torch.uint8)
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = normalize(images, mean, std)
    assert out.dtype == torch.float32
    assert torch.equal(out, expected)


def test_rejects_non_uint8_images():
    with pytest.raises(TypeError, match="uint8"):
        normalize(torch.zeros(2, 3, 4, 4), [0.5] * 3, [0.2] * 3)


def augment_section(**values) -> dict:
    """The `augment` config section with `values` changed (as the config check sees it)."""
    return {**dataclasses.asdict(AugmentConfig()), **values}


def check(**values) -> str | None:
    """The one-line config error of an `augment` section, from the schema or the relations check."""
    section = augment_section(**values)
    return config_error({"augment": section}, SCHEMA) or augment_error(section)


@pytest.mark.parametrize(
    "field,value", [("crop_min_scale", 0.0), ("crop_min_scale", 1.5), ("flip_p", 1.2), ("hue", 0.6), ("contrast", -1.0),
                    ("crop_min_ratio", 2.0)]
)
def test_bad_settings_are_one_line_config_errors_naming_the_field(field, value):
    message = check(**{field: value})
    assert message is not None and message.startswith("config error: augment.") and field in message
    assert "\n" not in message
    assert check() is None


# ---------------------------------------------------------------- exact agreement, same parameters


@pytest.mark.parametrize("size", [32, 16])  # 16: shrinking uses torchvision's antialiasing filter
def test_crop_resize_flip_match_torchvision_for_same_boxes(size):
    images = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    aug = identity_aug(NO_COLOUR, size)
    params = aug.sample_params(48, 32, 32, torch.Generator().manual_seed(3))
    assert 0 < params.flip.sum() < 48
    out = aug.apply(images, params)
    for i in range(48):
        left, top, right, bottom = (int(v) for v in params.boxes[i])
        expected = F.resized_crop(images[i].float() / 255, top, left, bottom - top, right - left, [size, size], antialias=True)
        if params.flip[i]:
            expected = F.horizontal_flip(expected)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "ours,theirs,low,high",
    [
        (adjust_brightness, F.adjust_brightness, 0.0, 2.0),
        (adjust_contrast, F.adjust_contrast, 0.0, 2.0),
        (adjust_saturation, F.adjust_saturation, 0.0, 2.0),
        (adjust_hue, F.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_ops_with_per_image_factors_match_torchvision(ours, theirs, low, high):
    g = torch.Generator().manual_seed(4)
    x = torch.rand(40, 3, 8, 8, generator=g)
    x[:4] = x[:4, :1]  # grey images: hue undefined, saturation no-op
    x[4:8, :, :2] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)  # ties and pure primaries in the hue branches
    x[8:12, 1:, 2:4] = 1.0
    factors = low + (high - low) * torch.rand(40, generator=g)
    out = ours(x, factors)
    for i in range(40):
        torch.testing.assert_close(out[i], theirs(x[i], float(factors[i])), atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision():
    x = torch.rand(5, 3, 6, 6)
    torch.testing.assert_close(grayscale(x), F.rgb_to_grayscale(x), atol=1e-6, rtol=0)


# ------------------------------------------------------------- statistics of the random choices

KS_ALPHA = 1e-3


def test_crop_scale_and_ratio_distribution_matches_torchvision():
    n = 4000
    ours = area_and_log_ratio(our_boxes(n, 32, 32, seed=5), 32, 32)
    theirs = area_and_log_ratio(torchvision_boxes(n, 32, 32, seed=5), 32, 32)
    for a, b in zip(ours, theirs):
        assert ks_2samp(a, b).pvalue > KS_ALPHA
    assert ours[0].min() >= 0.17 and ours[0].max() == 1.0  # 0.2 up to rounding of the box sides
    # The same test has the power to see a wrong scale range (torchvision's default 0.08).
    wrong = area_and_log_ratio(our_boxes(n, 32, 32, seed=5, config=AugmentConfig(crop_min_scale=0.08)), 32, 32)
    assert ks_2samp(wrong[0], theirs[0]).pvalue < KS_ALPHA


def test_crop_max_scale_below_one_bounds_the_crop_area():
    # scale (0.2, 0.6): areas uniform between 0.2 and 0.6 of the image (mean 0.4), as torchvision's.
    n = 4000
    config = AugmentConfig(crop_min_scale=0.2, crop_max_scale=0.6)
    ours = area_and_log_ratio(our_boxes(n, 32, 32, seed=5, config=config), 32, 32)
    theirs = area_and_log_ratio(torchvision_boxes(n, 32, 32, seed=5, scale=(0.2, 0.6)), 32, 32)
    for a, b in zip(ours, theirs):
        assert ks_2samp(a, b).pvalue > KS_ALPHA
    # Rounding the sides moves an area by at most (28.6 + 21.5) / 2 + 0.25 pixels of 1024: 0.025.
    assert ours[0].min() >= 0.2 - 0.025 and ours[0].max() <= 0.6 + 0.025
    assert abs(ours[0].mean() - 0.4) < 4 * (0.4 / math.sqrt(12)) / math.sqrt(n) + 0.002
    # The same test has the power to see the upper bound ignored (1.0 used).
    wrong = area_and_log_ratio(our_boxes(n, 32, 32, seed=5, config=AugmentConfig(crop_min_scale=0.2)), 32, 32)
    assert ks_2samp(wrong[0], theirs[0]).pvalue < KS_ALPHA


def test_center_crop_fallback_matches_torchvision_on_a_wide_image():
    # 8x40: most attempts are too tall, so ~3/4 of the draws fall back to the 8x11 center crop.
    n = 3000
    ours, theirs = our_boxes(n, 8, 40, seed=6), torchvision_boxes(n, 8, 40, seed=6)
    center = torch.tensor([14.0, 0.0, 25.0, 8.0])
    ours_fallback = (ours == center).all(1).float().mean().item()
    theirs_fallback = (theirs == center).all(1).float().mean().item()
    assert 0.5 < theirs_fallback < 0.95
    assert abs(ours_fallback - theirs_fallback) < 0.045  # 4 standard errors of the difference
    assert (ours[:, 2] <= 40).all() and (ours[:, 3] <= 8).all() and (ours[:, :2] >= 0).all()


def test_rendered_crops_and_flips_match_torchvision_pipeline_statistics():
    n = 500
    image = ramp_image()
    aug = identity_aug(NO_COLOUR)
    ours = crop_geometry(aug(image.expand(n, -1, -1, -1).contiguous(), torch.Generator().manual_seed(9)))
    torch.manual_seed(9)
    pipeline = v2.Compose([v2.RandomResizedCrop(SIZE, scale=(0.2, 1.0)), v2.RandomHorizontalFlip(0.5)])
    theirs = crop_geometry(torch.stack([pipeline(image) for _ in range(n)]).float() / 255)
    area_ours, area_theirs = (ours[0] * ours[1]).numpy(), (theirs[0] * theirs[1]).numpy()
    assert ks_2samp(area_ours, area_theirs).pvalue > KS_ALPHA
    se = math.sqrt(0.25 / n)
    assert abs(ours[2].float().mean() - 0.5) < 4 * se
    assert abs(theirs[2].float().mean() - 0.5) < 4 * se
    no_flip = identity_aug(AugmentConfig(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0))
    assert not crop_geometry(no_flip(image.expand(50, -1, -1, -1).contiguous(), torch.Generator().manual_seed(9)))[2].any()


def colour_change_stats(base, out):
    """Per-sample mean |out - base| and whether out is grey; base/out in [0, 1]."""
    change = (out - base).abs().mean(dim=(1, 2, 3))
    grey = (out.amax(1) - out.amin(1)).amax(dim=(1, 2)) < 1e-6
    return change, grey


def test_colour_statistics_match_torchvision_pipeline():
    n = 600
    images = colourful_images(n, seed=10)
    aug = identity_aug()
    params = aug.sample_params(n, SIZE, SIZE, torch.Generator().manual_seed(11))
    out = aug.apply(images, params)
    params.jitter[:], params.gray[:] = False, False
    ours = colour_change_stats(aug.apply(images, params), out)

    torch.manual_seed(11)
    geometry = v2.Compose([v2.RandomResizedCrop(SIZE, scale=(0.2, 1.0)), v2.RandomHorizontalFlip()])
    colour = v2.Compose([v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(0.2)])
    base = torch.stack([geometry(im) for im in images])
    theirs = colour_change_stats(base.float() / 255, torch.stack([colour(b) for b in base]).float() / 255)

    se = math.sqrt(0.2 * 0.8 / n)
    for change, grey in (ours, theirs):
        assert abs(grey.float().mean() - 0.2) < 4 * se
        changed = (change[~grey] > 0).float().mean()  # jittered share of the colour outputs
        assert abs(changed - 0.8) < 4 * math.sqrt(0.8 * 0.2 / (~grey).sum())
    for grey_outputs in (True, False):
        a, b = ours[0][ours[1] == grey_outputs], theirs[0][theirs[1] == grey_outputs]
        assert abs(a.mean() - b.mean()) < 4 * math.sqrt(a.var() / len(a) + b.var() / len(b))


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation", "hue"])
def test_each_jitter_op_changes_colours_like_torchvision(op):
    # Whole image (no crop), always jittered with this op only: mean |change| per image must agree.
    n = 400
    images = colourful_images(n, seed=12)
    strength = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "hue": 0.0, op: AugmentConfig().__dict__[op]}
    config = AugmentConfig(
        crop_min_scale=1.0, crop_min_ratio=1.0, crop_max_ratio=1.0, flip_p=0.0, jitter_p=1.0, grayscale_p=0.0, **strength
    )
    ours = (identity_aug(config)(images, torch.Generator().manual_seed(13)) - images / 255).abs().mean(dim=(1, 2, 3))
    torch.manual_seed(13)
    jitter = v2.ColorJitter(**strength)
    theirs = torch.stack([(jitter(im).float() - im.float()).abs().mean() / 255 for im in images])
    assert theirs.mean() > 0.02
    assert abs(ours.mean() - theirs.mean()) < 4 * math.sqrt(ours.var() / n + theirs.var() / n)


# ------------------------------------------------------- Gaussian blur and solarization (BYOL)

BYOL_VIEWS = dict(blur_p=[1.0, 0.1], solarize_p=[0.0, 0.2])  # BYOL's two views
# No crop, flip or colour: the whole image, so that the blur or solarization alone is seen.
WHOLE_IMAGE = dict(crop_min_scale=1.0, crop_min_ratio=1.0, crop_max_ratio=1.0, flip_p=0.0, jitter_p=0.0,
                   grayscale_p=0.0)


def noise_images(n, seed, size=SIZE):
    """Independent uniform pixels: any blur changes every image, every image has pixels >= 0.5."""
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kernel_size", [3, 5, 13])
def test_gaussian_blur_with_per_image_sigmas_matches_torchvision(kernel_size):
    x = torch.rand(6, 3, 20, 17, generator=torch.Generator().manual_seed(20))  # not square: rows vs columns
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 3.0])
    out = gaussian_blur(x, sigmas, kernel_size)
    for i, sigma in enumerate(sigmas.tolist()):
        torch.testing.assert_close(out[i], F.gaussian_blur(x[i], [kernel_size] * 2, [sigma] * 2), atol=1e-5, rtol=0)
    # The same comparison sees each image blurred with another image's sigma.
    wrong = gaussian_blur(x, sigmas.roll(1), kernel_size)
    for i, sigma in enumerate(sigmas.tolist()):
        assert (wrong[i] - F.gaussian_blur(x[i], [kernel_size] * 2, [sigma] * 2)).abs().max() > 1e-3


def test_blur_in_the_pipeline_uses_the_drawn_sigma_and_the_default_kernel_size():
    # 32 px views: kernel 32 // 20 * 2 + 1 = 3 (PatrickHua/SimSiam's rule); the blur comes after grayscale.
    images = colourful_images(12, seed=21)
    aug = identity_aug(AugmentConfig(blur_p=[1.0]))
    assert aug.blur_kernel == 3
    params = aug.sample_params(12, SIZE, SIZE, torch.Generator().manual_seed(22))
    assert params.blur.all() and params.gray.any()
    out = aug.apply(images, params)
    params.blur = None
    base = aug.apply(images, params)
    for i in range(12):
        expected = F.gaussian_blur(base[i], [3, 3], [float(params.sigma[i])] * 2)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)
    assert max((out[i] - F.gaussian_blur(base[i], [5, 5], [float(params.sigma[i])] * 2)).abs().max()
               for i in range(12)) > 1e-3  # a 5 px kernel is a different blur here


def test_blur_kernel_size_rule_and_explicit_setting():
    assert [AugmentConfig().blur_kernel_size(s) for s in (16, 32, 64, 96, 224)] == [1, 3, 7, 9, 23]
    assert AugmentConfig(blur_kernel=5).blur_kernel_size(224) == 5
    with pytest.raises(UserError, match=r"augment\.blur_kernel .*too large"):
        identity_aug(AugmentConfig(blur_p=[0.5], blur_kernel=65))
    identity_aug(AugmentConfig(blur_kernel=65))  # blur off: any odd kernel size is fine


def test_solarize_matches_torchvision_exactly_including_the_threshold():
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(23))
    x[:, :, 0, :4] = torch.tensor([0.5, torch.nextafter(torch.tensor(0.5), torch.tensor(0.0)), 0.0, 1.0])
    for threshold in (0.5, 0.25):
        x[:, :, 1, 0] = threshold
        assert torch.equal(solarize(x, threshold), F.solarize(x, threshold))
    # Pixels exactly at the threshold are inverted: a strict comparison would give another image
    # (at 0.25; at 0.5 the inverse of 0.5 is 0.5 itself).
    assert not torch.equal(solarize(x, 0.25), torch.where(x > 0.25, 1 - x, x))
    # On uint8 pixels, threshold 0.5 is torchvision's RandomSolarize(threshold=128) (up to float
    # rounding of 1 - v / 255 against (255 - v) / 255; one grey level apart would be 0.004).
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    torch.testing.assert_close(solarize(pixels.float() / 255, 0.5), F.solarize(pixels, 128).float() / 255,
                               atol=1e-6, rtol=0)


def blur_and_solarize_rates(config, view, n=1000, seed=24):
    """(blurred, solarized, both) fractions of one view of noise images, read off the outputs.

    Blur and solarization draw after every other choice, so the same generator state gives the
    same crop and colours without them (`base`). Solarizing at 0.5 leaves no pixel above 0.5.
    """
    images = noise_images(n, seed=seed)
    off = AugmentConfig(**{**config.__dict__, "blur_p": [0.0], "solarize_p": [0.0]})
    out = identity_aug(config)(images, torch.Generator().manual_seed(seed), view=view)
    base = identity_aug(off)(images, torch.Generator().manual_seed(seed), view=view)
    unblurred = ((out == base) | (out == solarize(base, 0.5))).flatten(1).all(1)
    solarized = out.amax(dim=(1, 2, 3)) <= 0.5
    assert (base.amax(dim=(1, 2, 3)) > 0.5).all()
    rate = lambda chosen: chosen.float().mean().item()
    return rate(~unblurred), rate(solarized), rate(~unblurred & solarized)


def rate_matches(rate, p, n=1000):
    return abs(rate - p) <= 4 * math.sqrt(max(p * (1 - p), 1 / n) / n)


def test_blur_and_solarize_probabilities_are_per_view():
    # sigma >= 1: every blur shows in the pixels; no jitter: no view so dark that it has no pixel >= 0.5.
    config = AugmentConfig(**BYOL_VIEWS, blur_sigma_min=1.0, jitter_p=0.0)
    rates = {view: blur_and_solarize_rates(config, view) for view in (0, 1, 2, 3)}
    assert rates[0] == (1.0, 0.0, 0.0)
    assert rate_matches(rates[1][0], 0.1) and rate_matches(rates[1][1], 0.2)
    assert rate_matches(rates[1][2], 0.1 * 0.2)  # independent decisions, as RandomApply's and RandomSolarize's
    assert rates[2] == rates[0] and rates[3] == rates[1]  # view v uses p[v % 2]
    # The same check rejects a wrong probability (0.5 instead of 0.1 for the second view's blur).
    wrong = blur_and_solarize_rates(AugmentConfig(**{**config.__dict__, "blur_p": [1.0, 0.5]}), 1)
    assert rate_matches(wrong[0], 0.5) and not rate_matches(wrong[0], 0.1)
    # One value applies to every view.
    single = AugmentConfig(blur_p=[0.3], blur_sigma_min=1.0, jitter_p=0.0)
    assert all(rate_matches(blur_and_solarize_rates(single, view)[0], 0.3) for view in (0, 1))


def our_sigmas(config, n=3000, seed=25):
    return identity_aug(config).sample_params(n, SIZE, SIZE, torch.Generator().manual_seed(seed)).sigma.numpy()


def test_blur_sigmas_are_distributed_like_torchvision_gaussian_blur():
    n = 3000
    torch.manual_seed(25)
    blur = v2.GaussianBlur(3, sigma=(0.1, 2.0))
    theirs = [blur.make_params([])["sigma"][0] for _ in range(n)]
    ours = our_sigmas(AugmentConfig(blur_p=[0.5]), n)
    assert ks_2samp(ours, theirs).pvalue > KS_ALPHA
    assert ours.min() >= 0.1 and ours.max() <= 2.0
    # The same test sees a wrong range.
    assert ks_2samp(our_sigmas(AugmentConfig(blur_p=[0.5], blur_sigma_min=0.5), n), theirs).pvalue < KS_ALPHA


def blur_change(images, blurred):
    return (blurred - images).abs().mean(dim=(1, 2, 3)).numpy()


def test_blur_strength_matches_torchvision_gaussian_blur():
    # Whole image (no crop, no colour), always blurred: per-image mean |change| as torchvision's.
    n = 600
    images = colourful_images(n, seed=26)
    ours = identity_aug(AugmentConfig(**WHOLE_IMAGE, blur_p=[1.0]))(images, torch.Generator().manual_seed(27))
    ours = blur_change(images / 255, ours)
    torch.manual_seed(27)
    blur = v2.GaussianBlur(3, sigma=(0.1, 2.0))  # torchvision's recipe at 32 px
    theirs = blur_change(images / 255, torch.stack([blur(im / 255) for im in images]))
    assert ks_2samp(ours, theirs).pvalue > KS_ALPHA
    # The same test sees a wrong kernel size (5 px instead of 3).
    wrong = identity_aug(AugmentConfig(**WHOLE_IMAGE, blur_p=[1.0], blur_kernel=5))(
        images, torch.Generator().manual_seed(27))
    assert ks_2samp(blur_change(images / 255, wrong), theirs).pvalue < KS_ALPHA


def test_same_generator_state_gives_same_views_with_blur_and_solarize():
    images = colourful_images(16, seed=28)
    aug = BatchAugment(AugmentConfig(blur_p=[0.5], solarize_p=[0.5]), [0.5] * 3, [0.25] * 3, SIZE)
    first = aug(images, torch.Generator().manual_seed(7), view=1)
    again = aug(images, torch.Generator().manual_seed(7), view=1)
    other = aug(images, torch.Generator().manual_seed(8), view=1)
    assert torch.equal(first, again)
    assert (first - other).abs().amax(dim=(1, 2, 3)).min() > 0.01


# --------------------------------------------- with blur and solarization off, nothing changes


def test_default_views_draw_exactly_what_they_drew_before_blur_and_solarize():
    # The code before blur and solarization drew torch.rand(n, 47) then randperm(4) per view; the
    # default must leave the generator where that left it, for every view.
    n = 10
    expected = torch.Generator().manual_seed(29)
    torch.rand(n, 4 * 10 + 7, generator=expected)
    torch.randperm(4, generator=expected)
    for config in (AugmentConfig(), AugmentConfig(blur_p=[0.0, 0.0], solarize_p=[0.0]),
                   AugmentConfig(blur_p=[0.0, 1.0], solarize_p=[0.0, 0.5])):
        g = torch.Generator().manual_seed(29)
        identity_aug(config).sample_params(n, SIZE, SIZE, g, view=0)
        assert torch.equal(g.get_state(), expected.get_state())
    # ... and the test sees a view that draws more (view 1 blurs in the last config).
    g = torch.Generator().manual_seed(29)
    identity_aug(AugmentConfig(blur_p=[0.0, 1.0])).sample_params(n, SIZE, SIZE, g, view=1)
    assert not torch.equal(g.get_state(), expected.get_state())


def test_default_views_equal_views_with_blur_and_solarize_off_and_share_crops_when_on():
    images = colourful_images(16, seed=30)
    default = BatchAugment(AugmentConfig(), [0.5] * 3, [0.25] * 3, SIZE)(images, torch.Generator().manual_seed(31))
    for view, config in ((0, AugmentConfig(blur_p=[0.0], solarize_p=[0.0])),
                         (0, AugmentConfig(blur_p=[0.0, 1.0], solarize_p=[0.0, 0.2])),  # on for view 1 only
                         (1, AugmentConfig(blur_p=[0.0, 0.0], solarize_p=[0.0, 0.0, 0.0]))):
        out = BatchAugment(config, [0.5] * 3, [0.25] * 3, SIZE)(images, torch.Generator().manual_seed(31), view=view)
        assert torch.equal(out, default)
    # With blur on, the other choices are still the default's (its draws come after theirs).
    draw = lambda config: identity_aug(config).sample_params(16, SIZE, SIZE, torch.Generator().manual_seed(31), view=1)
    on, off = draw(AugmentConfig(**BYOL_VIEWS)), draw(AugmentConfig())
    assert on.blur is not None and on.solarize is not None and off.blur is None and off.solarize is None
    for name in ("boxes", "flip", "jitter", "factors", "gray"):
        assert torch.equal(getattr(on, name), getattr(off, name)), name
    assert on.order == off.order
    byol = BatchAugment(AugmentConfig(**BYOL_VIEWS), [0.5] * 3, [0.25] * 3, SIZE)
    blurred = byol(images, torch.Generator().manual_seed(31))
    assert not torch.equal(blurred, default)  # the view-0 blur really applies


@pytest.mark.parametrize(
    "field,value",
    [("blur_p", [1.5]), ("blur_p", [0.5, -0.1]), ("blur_p", []), ("blur_p", 0.5), ("solarize_p", [2.0]),
     ("blur_sigma_min", 0.0), ("blur_sigma_min", 3.0), ("blur_kernel", 4), ("blur_kernel", -3),
     ("solarize_threshold", 1.5), ("solarize_threshold", -0.1)],
)
def test_bad_blur_and_solarize_settings_are_one_line_config_errors_naming_the_field(field, value):
    message = check(**{field: value})
    assert message is not None and f"augment.{field}" in message and "\n" not in message


def test_probabilities_are_stored_as_float_lists():
    # [1] and [1.0] are one setting (one run fingerprint); a tuple from Python code becomes a list.
    config = AugmentConfig(blur_p=(1, 0.1), solarize_p=[0])
    assert config.blur_p == [1.0, 0.1] and config.solarize_p == [0.0]
    assert all(type(p) is float for p in config.blur_p + config.solarize_p)


def test_torchvision_pipeline_blurs_and_solarizes_with_view_0_probabilities():
    def steps(config):
        pipeline = torchvision_pipeline(config, [0.0] * 3, [1.0] * 3, SIZE)
        return [type(t.transforms[0] if isinstance(t, v2.RandomApply) else t).__name__ for t in pipeline.transforms]

    default = steps(AugmentConfig())
    assert "GaussianBlur" not in default and "RandomSolarize" not in default  # as before: off adds nothing
    byol = steps(AugmentConfig(**BYOL_VIEWS))  # view 0: blur 1.0, solarize 0.0
    assert byol == default[:4] + ["GaussianBlur"] + default[4:]
    pipeline = torchvision_pipeline(AugmentConfig(blur_p=[0.7], solarize_p=[0.3]), [0.0] * 3, [1.0] * 3, 224)
    blur, solar = pipeline.transforms[4], pipeline.transforms[5]
    assert blur.p == 0.7 and blur.transforms[0].kernel_size == (23, 23) and blur.transforms[0].sigma == [0.1, 2.0]
    assert solar.p == 0.3 and solar.threshold == 127.5
    # Always solarizing a constant 200 (>= 128) gives 55, everything else off.
    image = torch.full((3, SIZE, SIZE), 200, dtype=torch.uint8)
    out = torchvision_pipeline(AugmentConfig(**WHOLE_IMAGE, solarize_p=[1.0]), [0.0] * 3, [1.0] * 3, SIZE)(image)
    torch.testing.assert_close(out, torch.full_like(out, 55 / 255))


class _ViewRecorder(Method):
    """Three views; the loss records them."""

    name = "view-recorder"
    num_views = 3

    def __init__(self):
        super().__init__(torch.nn.Linear(1, 1), MethodConfig(warmup_epochs=0))
        self.backbone.output_dim = 1
        self.views = []

    def loss(self, views, index=None):
        self.views = [v.detach().clone() for v in views]
        value = (self.backbone.weight * views[0].float().mean()).sum()
        return value, {"out_std": value.detach()}


def test_train_step_gives_each_view_its_own_probabilities():
    from imbssl.training.loop import train_step

    module = _ViewRecorder()
    aug = identity_aug(AugmentConfig(**WHOLE_IMAGE, solarize_p=[0.0, 1.0]), size=4)
    images = torch.full((8, 3, 4, 4), 200, dtype=torch.uint8)
    train_step(module, module.make_optimizer(8), images, torch.arange(8), aug, torch.Generator().manual_seed(0),
               torch.Generator().manual_seed(0), amp=False, channels_last=False)
    kept, inverted = torch.full((8, 3, 4, 4), 200 / 255), torch.full((8, 3, 4, 4), 1 - 200 / 255)
    torch.testing.assert_close(module.views[0], kept)
    torch.testing.assert_close(module.views[1], inverted)  # view 1: solarize_p[1] = 1.0
    torch.testing.assert_close(module.views[2], kept)  # view 2: solarize_p[2 % 2] = 0.0
