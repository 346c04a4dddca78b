"""`TensorLoader`: a split held as tensors on the training device, shuffled,
batched and augmented with batched tensor ops, and fed to Keras `fit`.

Keras on torch iterates a `torch.utils.data.DataLoader` as it is; this one
only hands over ready batches (`batch_size=None`, no workers), so the input
pipeline costs one gather per batch and never leaves the device.

Randomness depends only on `(seed, epoch)`: `set_epoch` (called by
`EpochSeeder` at the start of every epoch) makes the order and augmentation
of epoch k the same whether or not the run was resumed. `rank` and
`world_size` give each data-parallel process its own shard of every epoch: equal shards for
training (every rank takes the same number of steps; the last examples wrap around), or, with
`even_shards=False` (evaluation), disjoint shards that together hold every example exactly once.
"""

import hashlib
import math

import torch

from keras_cifar.data.augment import Augmentation, random_crop_flip
from keras_cifar.keras_internals import current_device


class TensorLoader(torch.utils.data.IterableDataset):
    def __init__(self, split, batch_size, *, shuffle=False, augment=False, seed=0, drop_remainder=False,
                 device=None, rank=0, world_size=1, even_shards=True):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"`rank` must be in [0, world_size). Received: rank={rank}, world_size={world_size}")
        self.device = torch.device(device or current_device())
        self.images = torch.as_tensor(split.images).to(self.device)
        self.labels = torch.as_tensor(split.labels).to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        if augment is True:
            augment = Augmentation()
        if augment and not isinstance(augment, Augmentation):
            raise ValueError(f"`augment` must be a bool or an Augmentation. Received: augment={augment!r}")
        self.augment = augment or None
        self._alternate_flips = None
        self.seed = seed
        self.drop_remainder = drop_remainder
        self.rank = rank
        self.world_size = world_size
        self.even_shards = even_shards
        self.epoch = 0

    @property
    def num_examples(self):
        """Examples this rank sees per epoch: with `even_shards`, the same on every rank (the last
        examples wrap around); without, its share of the examples, each counted once."""
        if self.even_shards:
            return math.ceil(len(self.labels) / self.world_size)
        return len(range(self.rank, len(self.labels), self.world_size))

    @property
    def images_per_epoch(self):
        """Examples this rank trains on per epoch (without the last partial batch when `drop_remainder`)."""
        return len(self) * self.batch_size if self.drop_remainder else self.num_examples

    def __len__(self):
        if self.drop_remainder:
            return self.num_examples // self.batch_size
        return math.ceil(self.num_examples / self.batch_size)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def _generator(self, device, stream, *parts):
        generator = torch.Generator(device=device)
        generator.manual_seed(stream_seed(self.seed, self.epoch, stream, *parts))
        return generator

    def epoch_order(self):
        """This rank's indices for the epoch: one permutation shared by all ranks, dealt out in turn."""
        count = len(self.labels)
        if self.shuffle:
            order = torch.randperm(count, generator=self._generator("cpu", "shuffle"))
        else:
            order = torch.arange(count)
        if self.world_size > 1 and not self.even_shards:
            order = order[self.rank::self.world_size]
        elif self.world_size > 1:
            total = self.num_examples * self.world_size  # equal shards: wrap around to fill the last ones
            order = order.repeat(math.ceil(total / count))[:total][self.rank::self.world_size]
        return order.to(self.device)

    def alternate_flips(self):
        """Which examples are mirrored in even epochs (the others in odd ones): one draw per run."""
        if self._alternate_flips is None:
            generator = torch.Generator(device="cpu").manual_seed(stream_seed(self.seed, "alternate flips"))
            self._alternate_flips = (torch.rand(len(self.labels), generator=generator) < 0.5).to(self.device)
        return self._alternate_flips

    def __iter__(self):
        order = self.epoch_order()
        augment = self.augment
        generator = self._generator(self.device, "augment", self.rank) if augment else None
        for step in range(len(self)):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            images = self.images[index]
            if augment:
                flipped = None
                if augment.flip == "alternate":
                    flipped = (self.alternate_flips()[index] ^ bool(self.epoch % 2))[:, None]
                images = random_crop_flip(images, generator, padding=augment.padding, fill=augment.fill,
                                          flip=augment.flip == "random", flipped=flipped)
            yield images, self.labels[index]

    def as_keras_input(self):
        """The form Keras `fit`/`evaluate` take: a DataLoader that passes batches through."""
        return torch.utils.data.DataLoader(self, batch_size=None, num_workers=0)


def stream_seed(*parts):
    """A 63-bit seed for one random stream, from its parts (seed, epoch, stream name, rank ...)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
