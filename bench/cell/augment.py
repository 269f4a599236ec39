"""The strong recipe's augmentations, batched on the training device and different per image.

torchvision's transforms draw one set of parameters per call, so a batch gets one augmentation
for all its images (pytorch/vision issue 8484), and kornia is not a dependency: the policies here
are our own batched ops. Every random draw comes from a generator seeded from the cell's seed, so
a cell's augmented batches are the same on every run; nothing here waits for the device (no host
sync), so the CPU keeps queueing work ahead of a GPU.

Two stages, as in timm's training script:
- :class:`ImagePolicy` on uint8 batches, after crop and flip: TrivialAugment (wide) or
  RandAugment (2 ops at magnitude 9 of 30), one op (or two) drawn per image;
- :class:`BatchMix` on normalised float batches inside the training step: random erasing (per
  image, per-pixel noise like timm's ``mode='pixel'``), then timm's ``Mixup`` (mixup or cutmix,
  switched per batch) giving soft targets with the label smoothing folded in.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.data.mixup import mixup_target

OPS = (
    "identity",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
    "rotate",
    "brightness",
    "color",
    "contrast",
    "sharpness",
    "posterize",
    "solarize",
    "autocontrast",
    "equalize",
)
GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
SIGNED = (*GEOMETRIC, "brightness", "color", "contrast", "sharpness")
# the largest magnitude of each op (torchvision's spaces; translation as a share of the side,
# which is 32 px for TrivialAugment-wide on CIFAR and scales with the image here)
TRIVIAL_WIDE = dict(shear=0.99, translate=1.0, rotate=135.0, enhance=0.99, posterize=6)
RANDAUGMENT = dict(shear=0.3, translate=150 / 331, rotate=30.0, enhance=0.9, posterize=4)
MAGNITUDE_BINS = 31
STREAMS = {"image": 1, "erase": 2, "mix": 3}  # one random stream per stage


def stream_seed(seed: int, stream: str) -> int:
    """A seed for one stage of one cell, independent of the data order's (``seed`` itself)."""
    return int(np.random.SeedSequence([seed, STREAMS[stream]]).generate_state(1)[0])


def _indexed(device: torch.device | str) -> torch.device:
    """``cuda`` as ``cuda:N``, the form a generator's and a tensor's device take."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------------- per-image policies
class ImagePolicy:
    """TrivialAugment-wide (``trivial``) or RandAugment (``rand``) on uint8 [B, C, H, W]."""

    def __init__(self, name: str, seed: int, split: bool | None = None):
        if name not in ("trivial", "rand"):
            raise ValueError(f"unknown policy {name!r}")
        self.name, self.seed = name, stream_seed(seed, "image")
        self.split = split  # apply_ops' way: None picks it by device
        self.space = TRIVIAL_WIDE if name == "trivial" else RANDAUGMENT
        self.layers = 1 if name == "trivial" else 2
        self.g: torch.Generator | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x.float()
        for op, m, sign in self._draws(len(x), x.device):
            out = apply_ops(out, op, m, sign, self.space, self.split)
        return out.round_().clamp_(0, 255).to(torch.uint8)

    def skip(self, b: int, device: torch.device) -> None:
        """Draw what a batch of ``b`` images draws, without the images: a resumed cell's replay
        of its finished epochs leaves this generator where the killed run's was."""
        self._draws(b, device)

    def _draws(self, b: int, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
        """Each layer's op, magnitude in [0, 1] and sign, per image."""
        device = _indexed(device)
        if self.g is None or self.g.device != device:
            self.g = _generator(device, self.seed)
        draws = []
        for _ in range(self.layers):
            op = torch.randint(0, len(OPS), (b,), device=device, generator=self.g)
            if self.name == "trivial":  # a magnitude bin drawn per image
                bins = torch.randint(0, MAGNITUDE_BINS, (b,), device=device, generator=self.g)
            else:  # RandAugment's fixed magnitude 9 of 30
                bins = torch.full((b,), 9, device=device)
            m = bins.float() / (MAGNITUDE_BINS - 1)
            sign = torch.where(torch.rand(b, device=device, generator=self.g) < 0.5, -1.0, 1.0)
            draws.append((op, m, sign))
        return draws


def apply_ops(
    x: torch.Tensor,
    op: torch.Tensor,
    m: torch.Tensor,
    sign: torch.Tensor,
    space: dict,
    split: bool | None = None,
) -> torch.Tensor:
    """Image i gets ``OPS[op[i]]`` at magnitude ``m[i]`` in [0, 1] (signed ops times ``sign``).

    On a GPU every op is computed for the whole batch and picked per image with ``where``: a few
    dozen elementwise kernels on small images cost less than the host sync that splitting the
    batch by op would need. On the CPU there is no sync to fear, so each op runs on its own
    images only (``split``). Both give the same result.
    """
    col = (m * torch.where(_is(op, SIGNED), sign, 1.0)).view(-1, 1, 1, 1)
    if x.device.type == "cpu" if split is None else split:
        out = x.clone()
        for k in range(1, len(OPS)):
            idx = (op == k).nonzero().flatten()
            if len(idx):
                out[idx] = _op(OPS[k], x[idx], op[idx], col[idx], space)
        return out.clamp(0, 255)
    out = torch.where(_is(op, GEOMETRIC).view(-1, 1, 1, 1), _affine(x, op, col, space), x)
    for name in OPS[len(GEOMETRIC) + 1 :]:
        out = torch.where(
            (op == OPS.index(name)).view(-1, 1, 1, 1), _op(name, x, op, col, space), out
        )
    return out.clamp(0, 255)


def _op(
    name: str, x: torch.Tensor, op: torch.Tensor, col: torch.Tensor, space: dict
) -> torch.Tensor:
    """One op for every image of ``x`` (``col``: each image's signed magnitude)."""
    if name in GEOMETRIC:
        return _affine(x, op, col, space)
    factor = 1.0 + space["enhance"] * col
    if name == "brightness":
        return x * factor
    if name == "color":
        return _blend(x, _gray(x), factor)
    if name == "contrast":
        return _blend(x, _gray(x).mean(dim=(2, 3), keepdim=True), factor)
    if name == "sharpness":
        return _blend(x, _smooth(x), factor)
    if name == "posterize":
        return _posterize(x, 8 - (space["posterize"] * col).round())
    if name == "solarize":
        return torch.where(x >= 255.0 * (1 - col), 255.0 - x, x)
    if name == "autocontrast":
        return _autocontrast(x)
    return _equalize(x)


def _is(op: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """``op`` in ``names``, a run of consecutive ops: compared on the device, nothing copied to it
    (a list turned into a device tensor would be a blocking copy every batch)."""
    first, last = OPS.index(names[0]), OPS.index(names[-1])
    assert OPS[first : last + 1] == names
    return (op >= first) & (op <= last)


def _affine(x: torch.Tensor, op: torch.Tensor, col: torch.Tensor, space: dict) -> torch.Tensor:
    """Shear, translation or rotation about the centre, nearest pixel, zero fill, in one warp."""
    b = len(x)
    v = col.view(-1)
    theta = torch.zeros(b, 2, 3, device=x.device)
    angle = torch.where(op == OPS.index("rotate"), v * math.radians(space["rotate"]), 0.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, 0, 1] += torch.where(op == OPS.index("shear_x"), v * space["shear"], 0.0)
    theta[:, 1, 0] += torch.where(op == OPS.index("shear_y"), v * space["shear"], 0.0)
    shift = 2.0 * space["translate"] * v  # normalised coordinates span 2 per side
    theta[:, 0, 2] = torch.where(op == OPS.index("translate_x"), shift, 0.0)
    theta[:, 1, 2] = torch.where(op == OPS.index("translate_y"), shift, 0.0)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def _blend(x: torch.Tensor, base: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return base + factor * (x - base)


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH kernel inside the image, the border pixels left as they are (as PIL does)."""
    c = x.shape[1]
    k = torch.ones(c, 1, 3, 3, device=x.device)
    k[:, :, 1, 1] = 5.0
    inner = F.conv2d(x, k / 13.0, groups=c)
    return F.pad(inner, (1, 1, 1, 1)) + x * _border(x)


def _border(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    mask = torch.ones(1, 1, h, w, device=x.device)
    mask[..., 1:-1, 1:-1] = 0
    return mask


def _posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    step = torch.pow(2.0, 8 - bits.clamp(1, 8))
    return torch.floor(x / step) * step


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) * 255.0 / span.clamp_min(1e-6), x)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per image and channel (PIL's rule, as torchvision applies it)."""
    b, c, h, w = x.shape
    flat = x.round().long().clamp(0, 255).view(b * c, h * w)
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float32)
    )
    # the last non-empty bin's count is left out of the step, as in PIL
    last = torch.gather(hist, 1, (255 - hist.flip(1).ne(0).float().argmax(1, keepdim=True)))
    step = torch.div(hist.sum(1, keepdim=True) - last, 255, rounding_mode="floor")
    cum = torch.cumsum(hist, 1) - hist  # images below each level
    lut = torch.div(
        cum + torch.div(step, 2, rounding_mode="floor"), step.clamp_min(1), rounding_mode="floor"
    )
    out = torch.gather(lut.clamp(0, 255), 1, flat).view(b, c, h, w)
    return torch.where((step > 0).view(b, c, 1, 1), out, x)


# ---------------------------------------------------------------------- erasing, mixup, cutmix
class BatchMix:
    """Random erasing, then mixup/cutmix, on a normalised float batch: ``(x, y) -> (x, soft y)``.

    ``Mixup`` is timm's (batch mode: one mixing weight per batch, each image mixed with another
    image of the batch); it draws from NumPy's global generator, so the call runs between a swap
    of that generator's state with this cell's own seeded state.
    """

    def __init__(
        self,
        num_classes: int,
        seed: int,
        *,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        erasing: float = 0.0,
        label_smoothing: float = 0.0,
    ):
        self.num_classes, self.smoothing = num_classes, label_smoothing
        self.erasing = erasing
        self.erase_seed = stream_seed(seed, "erase")
        self.g: torch.Generator | None = None
        self.mix = None
        if mixup > 0 or cutmix > 0:
            self.mix = Mixup(
                mixup_alpha=mixup,
                cutmix_alpha=cutmix,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        self.np_state = np.random.RandomState(stream_seed(seed, "mix")).get_state()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.erasing > 0:
            if self.g is None or self.g.device != x.device:
                self.g = _generator(x.device, self.erase_seed)
            x = random_erase(x, self.erasing, self.g)
        if self.mix is None:
            return x, y
        return x, self._mix(x, y)

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mixes ``x`` in place; timm pairs images by flipping the batch, so an odd batch's last
        image stays unmixed (with a smoothed one-hot target)."""
        even = len(x) - len(x) % 2
        outer = np.random.get_state()
        np.random.set_state(self.np_state)
        try:
            targets = [self.mix(x[:even], y[:even])[1]] if even else []
        finally:
            self.np_state = np.random.get_state()
            np.random.set_state(outer)
        if even < len(x):
            targets.append(mixup_target(y[even:], self.num_classes, 1.0, self.smoothing))
        return torch.cat(targets)


def random_erase(
    x: torch.Tensor,
    prob: float,
    g: torch.Generator,
    *,
    area: tuple[float, float] = (0.02, 1 / 3),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    attempts: int = 10,
) -> torch.Tensor:
    """timm's ``RandomErasing(mode='pixel')`` for a whole batch: with probability ``prob`` an
    image gets one rectangle of normal noise; its area and aspect are drawn up to ``attempts``
    times until it fits, as timm does, all attempts at once."""
    b, c, h, w = x.shape
    dev = x.device
    target = torch.empty(b, attempts, device=dev).uniform_(*area, generator=g) * (h * w)
    log_ratio = torch.empty(b, attempts, device=dev).uniform_(
        math.log(aspect[0]), math.log(aspect[1]), generator=g
    )
    eh = torch.sqrt(target * torch.exp(log_ratio)).round()
    ew = torch.sqrt(target / torch.exp(log_ratio)).round()
    fits = (eh < h) & (ew < w)
    first = fits.float().argmax(dim=1, keepdim=True)  # first attempt that fits
    eh, ew = eh.gather(1, first).view(b), ew.gather(1, first).view(b)
    on = fits.any(dim=1) & (torch.rand(b, device=dev, generator=g) < prob)
    top = (torch.rand(b, device=dev, generator=g) * (h - eh + 1)).floor()
    left = (torch.rand(b, device=dev, generator=g) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    box = (
        (rows >= top.view(b, 1, 1))
        & (rows < (top + eh).view(b, 1, 1))
        & (cols >= left.view(b, 1, 1))
        & (cols < (left + ew).view(b, 1, 1))
        & on.view(b, 1, 1)
    )
    noise = torch.randn(x.shape, device=dev, generator=g, dtype=x.dtype)
    return torch.where(box[:, None], noise, x)
