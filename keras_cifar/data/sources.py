"""Which CIFAR-10 source `--data` names, detected from the path."""

import dataclasses
import hashlib
import os
import tarfile
import zlib

from keras_cifar.data.readers import member_name
from keras_cifar.errors import DataError

CANONICAL = "cifar10"

LAYOUTS = (
    "'cifar10' (the TFDS dataset, downloaded on first use)",
    "cifar-10-batches-py/ or cifar-10-python.tar.gz (the Python pickles torchvision and Keras download)",
    "cifar-10-batches-bin/ or cifar-10-binary.tar.gz (the binary release)",
    "an image folder train/<class>/<image> and test/<class>/<image> (png or jpg), or a .tar / .tar.gz of one",
)

KIND_NAMES = {
    "tfds": "TFDS cifar10",
    "python": "CIFAR-10 Python batches",
    "binary": "CIFAR-10 binary batches",
    "image_folder": "image folder",
}


@dataclasses.dataclass(frozen=True)
class DataSource:
    kind: str  # one of KIND_NAMES
    path: str = ""  # absolute path of a local copy
    prefix: str = ""  # folder of the layout inside `path`

    def describe(self):
        if self.kind == "tfds":
            return KIND_NAMES[self.kind]
        where = os.path.join(self.path, self.prefix) if self.prefix and os.path.isdir(self.path) else self.path
        return f"{KIND_NAMES[self.kind]} at {where}"

    def fingerprint(self):
        """Changes when the local copy is replaced or modified."""
        stat = os.stat(self.path)
        if os.path.isdir(self.path):
            stamps = []
            for root, dirs, files in os.walk(os.path.join(self.path, self.prefix)):
                dirs.sort()
                stamps.append((root, len(files), max((os.stat(os.path.join(root, f)).st_mtime_ns for f in files),
                                                    default=0)))
            stamp = repr(stamps)
        else:
            stamp = f"{stat.st_size}-{stat.st_mtime_ns}"
        digest = hashlib.sha1(f"{self.kind}|{self.path}|{self.prefix}|{stamp}".encode()).hexdigest()
        return digest[:16]


def layouts_message():
    return "Known layouts: " + "; ".join(LAYOUTS) + "."


def _detect_directory(path):
    entries = set(os.listdir(path))
    if {"data_batch_1", "test_batch"} <= entries:
        return DataSource("python", path)
    if {"data_batch_1.bin", "test_batch.bin"} <= entries:
        return DataSource("binary", path)
    for folder, kind in (("cifar-10-batches-py", "python"), ("cifar-10-batches-bin", "binary")):
        if os.path.isdir(os.path.join(path, folder)):
            return DataSource(kind, path, folder)
    if any(os.path.isdir(os.path.join(path, split)) for split in ("train", "test")):
        return DataSource("image_folder", path)
    subdirs = [e for e in entries if os.path.isdir(os.path.join(path, e)) and not e.startswith(".")]
    if len(subdirs) == 1 and any(os.path.isdir(os.path.join(path, subdirs[0], s)) for s in ("train", "test")):
        return DataSource("image_folder", path, subdirs[0])
    return None


def _detect_archive(path):
    try:
        with tarfile.open(path, "r:*") as tar:
            for count, member in enumerate(tar):
                parts = member_name(member.name).split("/")
                if parts[0] in ("cifar-10-batches-py", "cifar-10-batches-bin"):
                    return DataSource("python" if parts[0].endswith("py") else "binary", path, parts[0])
                if member.isfile() and len(parts) == 3 and parts[0] in ("train", "test"):
                    return DataSource("image_folder", path)
                if member.isfile() and len(parts) == 4 and parts[1] in ("train", "test"):
                    return DataSource("image_folder", path, parts[0])
                if count > 1000:
                    break
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
        if path.endswith((".tar", ".tar.gz", ".tgz")):
            raise DataError(
                f"The archive {path} is truncated or corrupt ({type(error).__name__}: {error}). "
                "Download or copy it again, or point `data` at another copy."
            ) from None
        return None
    return None


def resolve_source(data):
    """`--data` value -> DataSource. Raises DataError with the known layouts."""
    if not data:
        raise DataError(f"No data source given. {layouts_message()}")
    if data == CANONICAL and not os.path.exists(data):
        return DataSource("tfds")
    path = os.path.abspath(os.path.expanduser(data))
    if not os.path.exists(path):
        raise DataError(f"The data path {data!r} does not exist. {layouts_message()}")
    source = _detect_directory(path) if os.path.isdir(path) else _detect_archive(path)
    if source is None:
        raise DataError(f"{data!r} matches no CIFAR-10 layout that keras-cifar reads. {layouts_message()}")
    return source
