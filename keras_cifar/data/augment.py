"""Batched augmentation as tensor ops on the batch's device (no per-image Python)."""

import dataclasses

import torch

FILLS = ("zeros", "reflect")
FLIPS = ("random", "alternate", "none")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """How `TensorLoader` augments training batches: a random translation of up to `padding`
    pixels with `fill` at the border, and horizontal flips (`flip`: "random" per image and epoch,
    "alternate": a fixed random half of the images in even epochs and the other half in odd ones,
    or "none")."""

    padding: int = 4
    fill: str = "zeros"
    flip: str = "random"

    def __post_init__(self):
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"`padding` must be an integer >= 0. Received: padding={self.padding!r}")
        if self.fill not in FILLS:
            raise ValueError(f"`fill` must be one of {FILLS}. Received: fill={self.fill!r}")
        if self.flip not in FLIPS:
            raise ValueError(f"`flip` must be one of {FLIPS}. Received: flip={self.flip!r}")


def _reflect(index, size):
    """Mirror indices outside [0, size) back inside, without repeating the edge (as `F.pad(mode="reflect")`)."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


def random_crop_flip(images, generator, padding=4, flip=True, fill="zeros", flipped=None):
    """Random `padding`-pixel translation and a horizontal flip of a uint8 NHWC batch, with
    one gather for the whole batch. `fill="zeros"` with a random flip is torchvision's
    `RandomCrop(32, padding=4)` and `RandomHorizontalFlip()`; `fill="reflect"` moves in mirrored
    pixels instead. `flipped` ((batch, 1) booleans) chooses the flips instead of a random draw."""
    batch, height, width, channels = images.shape
    device = images.device
    dy = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=device)
    rows = dy + torch.arange(height, device=device)
    cols = dx + torch.arange(width, device=device)
    if flipped is None and flip:
        flipped = torch.rand(batch, 1, generator=generator, device=device) < 0.5
    if flipped is not None:
        cols = torch.where(flipped, cols.flip(1), cols)
    index = torch.arange(batch, device=device)[:, None, None]
    if fill == "reflect":
        rows, cols = _reflect(rows - padding, height), _reflect(cols - padding, width)
        return images[index, rows[:, :, None], cols[:, None, :]]
    padded = images.new_zeros(batch, height + 2 * padding, width + 2 * padding, channels)
    padded[:, padding:padding + height, padding:padding + width] = images
    return padded[index, rows[:, :, None], cols[:, None, :]]
