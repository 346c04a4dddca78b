"""Loading CIFAR-10 from any source into uint8 arrays, prepared and cached once.

Every source is prepared through TFDS (the `cifar10` builder or
`Cifar10Local`). The decoded arrays of a prepared source are then cached next
to the TFDS data as one `.npz` file, so a second run reads 180 MB of arrays
instead of decoding 60,000 images again. Where TensorFlow Datasets is not
installed (a GPU image with torch alone), a local copy is read straight from
its files into the same arrays and the same cache.
"""

import contextlib
import dataclasses
import glob
import os
import shutil
import sys
import tempfile

import numpy as np

from keras_cifar import tensorflow_cpu
from keras_cifar.data import readers
from keras_cifar.data.sources import DataSource, layouts_message, resolve_source
from keras_cifar.errors import DataError, UsageError

CACHE_FORMAT = 1  # bump when the cache file's contents change


@dataclasses.dataclass
class Split:
    images: np.ndarray  # (N, 32, 32, 3) uint8 RGB
    labels: np.ndarray  # (N,) int64

    def __len__(self):
        return len(self.labels)

    def take(self, indices):
        return Split(self.images[indices], self.labels[indices])


@dataclasses.dataclass
class CifarData:
    train: Split
    test: Split
    class_names: tuple
    source: str
    val: Split = None  # held out of train by `val_split`

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def eval_split_name(self):
        """The split evaluated after every epoch: `val` if held out, else `test` (as the originals did)."""
        return "val" if self.val is not None else "test"

    @property
    def eval(self):
        return self.val if self.val is not None else self.test

    def limit(self, train_images=None, eval_images=None, seed=0):
        """Keeps seeded random subsets (in their original order) of train and of the evaluated split."""

        def subset(split, count, salt):
            if count is None or count >= len(split):
                return split
            chosen = np.random.default_rng([seed, salt]).permutation(len(split))[:count]
            return split.take(np.sort(chosen))

        self.train = subset(self.train, train_images, 1)
        if self.val is not None:
            self.val = subset(self.val, eval_images, 2)
        else:
            self.test = subset(self.test, eval_images, 3)
        return self

    def summary(self):
        parts = [f"train {len(self.train):,}"]
        if self.val is not None:
            parts.append(f"val {len(self.val):,}")
        parts.append(f"test {len(self.test):,}")
        return f"{', '.join(parts)} images, {self.num_classes} classes, from {self.source}"


def default_data_dir():
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def _cache_path(root, source, builder=None):
    if source.kind == "tfds":
        name = f"cifar10-{builder.version}"
    else:
        name = f"{source.kind}-{source.fingerprint()}"
    return os.path.join(root, "keras_cifar_arrays", f"{name}-v{CACHE_FORMAT}.npz")


def _read_cache(path):
    try:
        with np.load(path, allow_pickle=False) as cached:
            arrays = {key: cached[key] for key in cached.files}
        return CifarData(
            train=Split(arrays["train_images"], arrays["train_labels"]),
            test=Split(arrays["test_images"], arrays["test_labels"]),
            class_names=tuple(str(name) for name in arrays["class_names"]),
            source=str(arrays["source"]),
        )
    except Exception:  # a damaged cache is rebuilt, never trusted
        return None


def _write_cache(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp.npz")
    try:
        with os.fdopen(handle, "wb") as tmp:
            np.savez(
                tmp,
                train_images=data.train.images,
                train_labels=data.train.labels,
                test_images=data.test.images,
                test_labels=data.test.labels,
                class_names=np.array(data.class_names),
                source=np.array(data.source),
            )
        os.replace(tmp_path, path)
    except OSError:
        # An unwritable cache only costs the next run a TFDS read.
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


@contextlib.contextmanager
def _exclusive(lock_path):
    """One process at a time prepares a source; the others wait, then read its cache."""
    import fcntl

    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_incomplete(builder_root):
    for leftover in glob.glob(os.path.join(builder_root, "**", "incomplete.*"), recursive=True):
        shutil.rmtree(leftover, ignore_errors=True)


def _download_failed(error, root):
    return DataError(
        f"Could not download or prepare CIFAR-10 through TFDS into {root} ({type(error).__name__}: {error}). "
        "This machine may have no internet access. Point `data` at a local copy instead, for example "
        "`data='./data/cifar-10-batches-py'` or `data='cifar10-jpeg.tar.gz'`. " + layouts_message()
    )


def _make_builder(source, root):
    import absl.logging

    from keras_cifar.tensorflow_cpu import import_tfds

    tfds = import_tfds()

    absl.logging.set_verbosity(absl.logging.ERROR)  # TFDS warns about folders it is about to create

    if source.kind == "tfds":
        return tfds.builder("cifar10", data_dir=root)
    from keras_cifar.data.builder import Cifar10Local

    folder = f"{source.kind}-{source.fingerprint()}"
    return Cifar10Local(source, data_dir=os.path.join(root, "keras_cifar_local", folder))


@contextlib.contextmanager
def _few_download_retries(retries=2):
    """TFDS retries a failed download 10 times with exponential backoff (minutes without
    internet); two retries are enough to ride out a blip."""
    from keras_cifar.tensorflow_cpu import import_tfds

    import_tfds()
    from tensorflow_datasets.core.download import downloader

    previous = downloader.MAX_RETRIES
    downloader.MAX_RETRIES = retries
    try:
        yield
    finally:
        downloader.MAX_RETRIES = previous


def _prepare(builder, source, root):
    if builder.is_prepared():
        return
    builder_root = os.path.dirname(str(builder.data_dir))  # <data_dir>/<dataset name>: TFDS's scratch folders
    _remove_incomplete(builder_root)
    try:
        with _few_download_retries():
            builder.download_and_prepare()
    except DataError:
        _remove_incomplete(builder_root)
        raise
    except KeyboardInterrupt:
        _remove_incomplete(builder_root)
        raise
    except Exception as error:
        _remove_incomplete(builder_root)
        if source.kind == "tfds":
            raise _download_failed(error, root) from None
        raise DataError(f"Preparing {source.describe()} failed ({type(error).__name__}: {error}).") from None


def _read_split(builder, split):
    from keras_cifar.tensorflow_cpu import import_tfds

    tfds = import_tfds()

    # Batches, not batch_size=-1: TF aborts materialising some datasets (TFDS mocks) in one element.
    chunks = list(tfds.as_numpy(builder.as_dataset(split=split, batch_size=4096)))
    arrays = {key: np.concatenate([chunk[key] for chunk in chunks]) for key in ("id", "image", "label")}
    return _split_in_id_order(arrays["id"], arrays["image"], arrays["label"])  # TFDS shuffles its records


def _split_in_id_order(ids, images, labels):
    """A Split in the canonical order of its record ids, whichever path read it."""
    order = np.argsort(ids, kind="stable")
    return Split(np.ascontiguousarray(images[order]), np.asarray(labels)[order].astype(np.int64))


def _validate(val_split, seed):
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)) or not 0 <= val_split < 1:
        raise UsageError(f"`val_split` must be a fraction in [0, 1). Received: val_split={val_split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"`seed` must be an integer. Received: seed={seed!r}")


def hold_out(train, fraction, seed):
    """Splits `fraction` of `train` off as validation, the same for the same seed."""
    count = int(round(len(train) * fraction))
    if fraction > 0 and not 0 < count < len(train):
        raise UsageError(
            f"`val_split={fraction}` of {len(train)} training images leaves an empty split; choose another fraction."
        )
    order = np.random.default_rng(seed).permutation(len(train))
    return train.take(np.sort(order[count:])), train.take(np.sort(order[:count]))


def load_cifar(data="cifar10", data_dir=None, val_split=0.0, seed=0, log=None):
    """Loads a CIFAR-10 source (see `resolve_source`) as uint8 arrays.

    The first call for a source prepares it with TFDS under `data_dir`
    (TFDS's default when None) and caches the arrays; later calls read the
    cache. `val_split` holds out that fraction of train, chosen by `seed`.
    """
    _validate(val_split, seed)
    log = log or (lambda message: print(message, file=sys.stderr))
    source = data if isinstance(data, DataSource) else resolve_source(data)
    root = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as error:
        raise DataError(f"Cannot create the data directory {root}: {error.strerror}.") from None
    with_tfds = tensorflow_cpu.installed("tensorflow") and tensorflow_cpu.installed("tensorflow_datasets")
    if source.kind == "tfds" and not with_tfds:
        raise DataError("The TFDS dataset `data='cifar10'` needs TensorFlow and tensorflow-datasets, which are not "
                        "installed here. Point `data` at a local copy instead (read without them), for example "
                        "`data='cifar10-jpeg.tar.gz'`. " + layouts_message())
    builder = _make_builder(source, root) if source.kind == "tfds" else None
    cache = _cache_path(root, source, builder)
    loaded = _read_cache(cache) if os.path.exists(cache) else None
    if loaded is None:
        with _exclusive(cache + ".lock"):
            loaded = _read_cache(cache) if os.path.exists(cache) else None  # prepared while we waited?
            if loaded is None:
                loaded = _prepare_and_cache(source, root, builder, cache, log, with_tfds)
    if val_split:
        loaded.train, loaded.val = hold_out(loaded.train, val_split, seed)
    return loaded


def _read_directly(source):
    """A local copy straight from its files, without TFDS: the arrays that the TFDS path gives
    (records sorted by id; TFDS keeps the decoded images losslessly). Returns (splits, class
    names, image folder or None)."""
    folder = readers.ImageFolder(source.path, source.prefix) if source.kind == "image_folder" else None
    splits = {}
    for split in readers.SPLITS:
        ids, images, labels = [], [], []
        for key, image, label in readers.read_examples(source, split, folder):
            ids.append(key)
            images.append(image)
            labels.append(label)
        stacked = np.stack(images) if images else np.zeros((0, readers.IMAGE_SIZE, readers.IMAGE_SIZE, 3), np.uint8)
        splits[split] = _split_in_id_order(np.array(ids), stacked, np.array(labels, dtype=np.int64))
    return splits, (folder.class_names if folder else readers.CIFAR10_CLASSES), folder


def _prepare_and_cache(source, root, builder, cache, log, with_tfds=True):
    if with_tfds:
        builder = builder or _make_builder(source, root)
        if not builder.is_prepared():
            log(f"Preparing {source.describe()} with TFDS into {root} (once) ...")
        _prepare(builder, source, root)
        splits = {split: _read_split(builder, split) for split in readers.SPLITS}
        class_names = tuple(builder.info.features["label"].names)
        image_folder = getattr(builder, "image_folder", None)
    else:
        log(f"Reading {source.describe()} without TFDS (not installed) into {root} (once) ...")
        splits, class_names, image_folder = _read_directly(source)
    if min(len(s) for s in splits.values()) == 0:
        raise DataError(f"{source.describe()} holds no images in one of its splits.")
    if source.kind == "tfds" and len(class_names) == 10:
        class_names = readers.CIFAR10_CLASSES
    loaded = CifarData(splits["train"], splits["test"], class_names, source.describe())
    skipped = getattr(image_folder, "skipped", None)
    if skipped and any(skipped.values()):
        names = [name for names in skipped.values() for name in names]
        log(f"Skipped {len(names)} file(s) that are not images: {', '.join(names[:5])}"
            f"{' ...' if len(names) > 5 else ''}")
    _write_cache(cache, loaded)
    return loaded
