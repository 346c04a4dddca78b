"""Batched augmentation as tensor ops on the batch's device (no per-image Python)."""

import torch


def random_crop_flip(images, generator, padding=4, flip=True):
    """Random `padding`-pixel translation with zero fill, and a random horizontal
    flip, of a uint8 NHWC batch: torchvision's `RandomCrop(32, padding=4)` and
    `RandomHorizontalFlip()`, done with one gather for the whole batch."""
    batch, height, width, channels = images.shape
    device = images.device
    padded = images.new_zeros(batch, height + 2 * padding, width + 2 * padding, channels)
    padded[:, padding:padding + height, padding:padding + width] = images
    dy = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (batch, 1), generator=generator, device=device)
    rows = dy + torch.arange(height, device=device)
    cols = dx + torch.arange(width, device=device)
    if flip:
        flipped = torch.rand(batch, 1, generator=generator, device=device) < 0.5
        cols = torch.where(flipped, cols.flip(1), cols)
    index = torch.arange(batch, device=device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]]
