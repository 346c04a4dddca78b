"""Readers of the local CIFAR-10 layouts. Each yields `(id, image, label)` with
`image` a 32x32x3 uint8 RGB array; none of them extracts anything to disk.

Image folders: every file that OpenCV cannot decode (text files, hidden
files, broken images) is skipped and counted; grayscale images are repeated
to RGB, the alpha channel of RGBA images is dropped, 16-bit images are scaled
to 8 bits, and images of another size are resized to 32x32 (area
interpolation when shrinking, bilinear when enlarging).
"""

import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from keras_cifar.errors import DataError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SIZE = 32
RECORD_BYTES = 1 + 32 * 32 * 3
SPLITS = ("train", "test")


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Loads CIFAR batch pickles without running arbitrary code from the file."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _corrupt(what, error):
    return DataError(
        f"{what} is truncated or corrupt ({type(error).__name__}: {error}). "
        "Download or copy it again, or point `data` at another copy."
    )


def member_name(name):
    """An archive member's path without a leading './' or '/'."""
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def chw_rows_to_hwc(rows):
    return np.ascontiguousarray(rows.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1))


class _Files:
    """Named files of a directory or of an archive, read on demand."""

    def __init__(self, path, prefix):
        self.path = path
        self.prefix = prefix  # folder of the layout inside the directory or archive
        self._tar = None

    def __enter__(self):
        if os.path.isfile(self.path):
            try:
                self._tar = tarfile.open(self.path, "r:*")
                self._members = {member_name(m.name): m for m in self._tar.getmembers() if m.isfile()}
            except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
                raise _corrupt(f"The archive {self.path}", error) from None
        return self

    def __exit__(self, *exc):
        if self._tar is not None:
            self._tar.close()

    def names(self):
        if self._tar is not None:
            start = f"{self.prefix}/" if self.prefix else ""
            return sorted(n[len(start):] for n in self._members if n.startswith(start) and "/" not in n[len(start):])
        return sorted(os.listdir(os.path.join(self.path, self.prefix)))

    def read(self, name):
        if self._tar is not None:
            where = f"{self.path}:{self.prefix}/{name}"
        else:
            where = os.path.join(self.path, self.prefix, name)
        try:
            if self._tar is not None:
                member = self._members[f"{self.prefix}/{name}" if self.prefix else name]
                return self._tar.extractfile(member).read()
            with open(os.path.join(self.path, self.prefix, name), "rb") as handle:
                return handle.read()
        except KeyError:
            raise DataError(f"{where} is missing.") from None
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise _corrupt(where, error) from None


def _batch_names(files, suffix=""):
    names = set(files.names())
    train = sorted(n for n in names if n.startswith("data_batch_") and n.endswith(suffix) and
                   n[len("data_batch_"):len(n) - len(suffix)].isdigit())
    test = f"test_batch{suffix}"
    if not train or test not in names:
        raise DataError(
            f"{files.path} holds no complete CIFAR-10 batch set: it needs data_batch_1{suffix} ... "
            f"and {test}; found {', '.join(sorted(names)) or 'nothing'}."
        )
    return {"train": train, "test": [test]}


def read_python_batches(path, prefix, split):
    """`cifar-10-batches-py`: pickled dicts with b'data' (N, 3072) CHW rows and b'labels'."""
    with _Files(path, prefix) as files:
        for name in _batch_names(files)[split]:
            try:
                batch = _ArraysOnlyUnpickler(io.BytesIO(files.read(name)), encoding="bytes").load()
                data = np.asarray(batch[b"data"], dtype=np.uint8)
                labels = np.asarray(batch[b"labels"], dtype=np.int64)
                if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE or len(labels) != len(data):
                    raise ValueError(f"data of shape {data.shape} with {len(labels)} labels")
            except DataError:
                raise
            except Exception as error:  # pickle raises many types on damaged input
                raise _corrupt(f"The batch file {name} in {path}", error) from None
            for index, (image, label) in enumerate(zip(chw_rows_to_hwc(data), labels)):
                yield f"{name}_{index:05d}", image, _checked_label(label, name)


def read_binary_batches(path, prefix, split):
    """`cifar-10-batches-bin`: records of 1 label byte and 3072 CHW pixel bytes."""
    with _Files(path, prefix) as files:
        for name in _batch_names(files, ".bin")[split]:
            raw = files.read(name)
            if len(raw) == 0 or len(raw) % RECORD_BYTES:
                raise _corrupt(
                    f"The batch file {name} in {path}",
                    ValueError(f"{len(raw)} bytes is not a whole number of {RECORD_BYTES}-byte records"),
                )
            records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
            for index, (image, label) in enumerate(zip(chw_rows_to_hwc(records[:, 1:]), records[:, 0])):
                yield f"{name}_{index:05d}", image, _checked_label(label, name)


def _checked_label(label, name):
    if not 0 <= int(label) < len(CIFAR10_CLASSES):
        raise DataError(f"The batch file {name} holds label {int(label)}; CIFAR-10 labels run from 0 to 9.")
    return int(label)


def decode_image(data):
    """Bytes of any OpenCV-readable image -> 32x32x3 uint8 RGB, or None if not an image."""
    import cv2  # here, not at import: training from arrays (and the GPU check) needs no OpenCV

    if not data:
        return None
    try:
        return _to_rgb32(cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED))
    except cv2.error:
        return None


def _to_rgb32(image):
    import cv2

    if image is None or image.size == 0 or image.ndim not in (2, 3):
        return None
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    elif image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    else:
        return None
    height, width = image.shape[:2]
    if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
        shrink = height > IMAGE_SIZE or width > IMAGE_SIZE
        image = cv2.resize(
            image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    return np.ascontiguousarray(image)


class ImageFolder:
    """`train/<class>/*` and `test/<class>/*` in a directory or a `.tar[.gz]`."""

    def __init__(self, path, prefix):
        self.path = path
        self.prefix = prefix
        self.skipped = {split: [] for split in SPLITS}
        self._index = self._scan()
        self.class_names = self._check_classes()

    def _scan(self):
        """{split: {class: [file names]}}, from the directory tree or the archive's member list."""
        index = {split: {} for split in SPLITS}
        root = f"{self.prefix}/" if self.prefix else ""
        if os.path.isdir(self.path):
            for split in SPLITS:
                split_dir = os.path.join(self.path, self.prefix, split)
                if not os.path.isdir(split_dir):
                    continue
                for class_name in sorted(os.listdir(split_dir)):
                    class_dir = os.path.join(split_dir, class_name)
                    if os.path.isdir(class_dir) and not class_name.startswith("."):
                        index[split][class_name] = sorted(
                            f for f in os.listdir(class_dir) if os.path.isfile(os.path.join(class_dir, f))
                        )
        else:
            try:
                with tarfile.open(self.path, "r:*") as tar:
                    for member in tar:
                        name = member_name(member.name)
                        if not name.startswith(root):
                            continue
                        parts = name[len(root):].split("/")
                        if member.isfile() and len(parts) == 3 and parts[0] in index and not parts[1].startswith("."):
                            index[parts[0]].setdefault(parts[1], []).append(parts[2])
            except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
                raise _corrupt(f"The archive {self.path}", error) from None
        return index

    def _check_classes(self):
        missing = [split for split in SPLITS if not self._index[split]]
        if missing:
            raise DataError(
                f"The image folder {self.path} has no {' and no '.join(repr(m + '/') for m in missing)} "
                "folder with class sub-folders. Expected train/<class>/<image> and test/<class>/<image>."
            )
        train, test = set(self._index["train"]), set(self._index["test"])
        if train != test:
            raise DataError(
                f"The image folder {self.path} has different classes in train/ and test/: only in train: "
                f"{sorted(train - test) or 'none'}; only in test: {sorted(test - train) or 'none'}. "
                "Both splits need the same class folders."
            )
        if len(train) < 2:
            raise DataError(f"The image folder {self.path} has {len(train)} class folder(s); at least 2 are needed.")
        return tuple(sorted(train))

    def read(self, split):
        labels = {name: label for label, name in enumerate(self.class_names)}
        wanted = {(c, f) for c, files in self._index[split].items() for f in files}
        root = f"{self.prefix}/" if self.prefix else ""
        if os.path.isdir(self.path):
            items = (
                ((c, f), os.path.join(self.path, self.prefix, split, c, f)) for c, f in sorted(wanted)
            )
            for (class_name, file_name), file_path in items:
                with open(file_path, "rb") as handle:
                    yield from self._example(split, class_name, file_name, handle.read(), labels)
            return
        try:
            with tarfile.open(self.path, "r:*") as tar:
                for member in tar:
                    name = member_name(member.name)
                    parts = name[len(root):].split("/")
                    if (member.isfile() and name.startswith(root) and len(parts) == 3 and parts[0] == split
                            and (parts[1], parts[2]) in wanted):
                        data = tar.extractfile(member).read()
                        yield from self._example(split, parts[1], parts[2], data, labels)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise _corrupt(f"The archive {self.path}", error) from None

    def _example(self, split, class_name, file_name, data, labels):
        image = None if file_name.startswith(".") else decode_image(data)
        if image is None:
            self.skipped[split].append(f"{split}/{class_name}/{file_name}")
            return
        yield f"{split}/{class_name}/{file_name}", image, labels[class_name]


def read_examples(source, split, image_folder=None):
    """`(id, image, label)` of one split of a local source (`DataSource` of kind python, binary or
    image_folder; `image_folder`: its `ImageFolder`, made here when None)."""
    if source.kind == "python":
        return read_python_batches(source.path, source.prefix, split)
    if source.kind == "binary":
        return read_binary_batches(source.path, source.prefix, split)
    return (image_folder or ImageFolder(source.path, source.prefix)).read(split)
