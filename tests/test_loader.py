"""TensorLoader: batching, deterministic shuffling and augmentation, shards."""

import numpy as np
import torch

from keras_cifar.data import Split, TensorLoader
from keras_cifar.data.augment import random_crop_flip
from tests.conftest import random_images


def split(count=100):
    return Split(random_images(count), np.arange(count) % 10)


def epoch_batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_every_example_once_per_epoch_in_batches():
    loader = TensorLoader(split(100), 32, shuffle=True, seed=1)
    batches = epoch_batches(loader, 0)
    assert len(loader) == len(batches) == 4
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    assert batches[0][0].dtype == torch.uint8 and batches[0][0].shape[1:] == (32, 32, 3)
    images = torch.cat([x for x, _ in batches])
    expected = torch.as_tensor(split(100).images)
    assert sorted(map(bytes, images.numpy())) == sorted(map(bytes, expected.numpy()))
    assert len(TensorLoader(split(100), 32, drop_remainder=True)) == 3
    assert [len(y) for _, y in TensorLoader(split(100), 32, drop_remainder=True)] == [32, 32, 32]
    assert TensorLoader(split(100), 32, drop_remainder=True).images_per_epoch == 96
    assert TensorLoader(split(100), 32).images_per_epoch == 100


def test_order_depends_only_on_seed_and_epoch():
    first = epoch_batches(TensorLoader(split(), 10, shuffle=True, seed=3), 2)
    again = epoch_batches(TensorLoader(split(), 10, shuffle=True, seed=3), 2)
    loader = TensorLoader(split(), 10, shuffle=True, seed=3)
    for _ in loader:  # iterating other epochs first changes nothing
        pass
    resumed = epoch_batches(loader, 2)
    other_epoch = epoch_batches(loader, 3)
    other_seed = epoch_batches(TensorLoader(split(), 10, shuffle=True, seed=4), 2)
    for a, b, c in zip(first, again, resumed):
        assert torch.equal(a[1], b[1]) and torch.equal(a[1], c[1])
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other_epoch))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other_seed))


def test_no_shuffle_keeps_order():
    labels = torch.cat([y for _, y in TensorLoader(split(25), 10)])
    assert labels.tolist() == [i % 10 for i in range(25)]


def test_augmentation_is_a_shifted_and_maybe_flipped_window():
    images = torch.as_tensor(random_images(64))
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2), (4, 4, 4, 4)).permute(0, 2, 3, 1)
    flips = shifts = 0
    for index in range(len(images)):
        def crop(dy, dx, flip, index=index):
            window = padded[index, dy:dy + 32, dx:dx + 32]
            return window.flip(1) if flip else window

        windows = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (False, True)
                   if torch.equal(out[index], crop(dy, dx, flip))]
        assert windows, f"image {index} is not a crop of the padded image"
        flips += windows[0][2]
        shifts += (windows[0][0], windows[0][1]) != (4, 4)
    assert 10 < flips < 54 and shifts > 40
    again = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_augmented_epochs_are_reproducible():
    loader = TensorLoader(split(), 16, shuffle=True, augment=True, seed=7)
    first, second = epoch_batches(loader, 1), epoch_batches(loader, 1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, second))
    plain = epoch_batches(TensorLoader(split(), 16, shuffle=True, augment=False, seed=7), 1)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, plain))  # same order, new pixels
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, plain))


def test_shards_are_disjoint_and_cover_the_epoch():
    data = split(103)
    shards = [TensorLoader(data, 8, shuffle=True, seed=2, rank=rank, world_size=4) for rank in range(4)]
    ids = [torch.cat([x.reshape(len(x), -1)[:, :8] for x, _ in epoch_batches(s, 5)]) for s in shards]
    assert {len(i) for i in ids} == {26}  # ceil(103 / 4): equal steps on every rank
    rows = [bytes(row.numpy()) for shard in ids for row in shard]
    assert len(rows) == 104 and len(set(rows)) == 103  # all covered; one wraps around to even the shards
    tiny = [TensorLoader(split(3), 2, rank=rank, world_size=8) for rank in range(8)]
    assert all(len(list(loader)) == 1 for loader in tiny)  # more ranks than examples: none is empty


def test_ranks_draw_different_augmentations():
    data = split(64)
    first, second = (TensorLoader(data, 64, augment=True, seed=1, rank=rank, world_size=1) for rank in (0, 0))
    assert torch.equal(next(iter(first))[0], next(iter(second))[0])
    rank0 = TensorLoader(data, 32, augment=True, seed=1, rank=0, world_size=2)
    rank1 = TensorLoader(data, 32, augment=True, seed=1, rank=1, world_size=2)
    generator0 = rank0._generator("cpu", "augment", 0)
    generator1 = rank1._generator("cpu", "augment", 1)
    assert not torch.equal(torch.rand(8, generator=generator0), torch.rand(8, generator=generator1))


def test_keras_input_passes_batches_through():
    loader = TensorLoader(split(40), 16)
    keras_input = loader.as_keras_input()
    assert len(keras_input) == 3
    batches = list(keras_input)
    assert torch.equal(batches[0][1], torch.arange(16) % 10)
