"""Shared fixtures. Real data comes from ../shared/data/cifar10-jpeg.tar.gz (only the
images a test needs are extracted); KERAS_CIFAR_DATA points elsewhere.

The tests run on the CPU, on any machine: their tolerances are the CPU's float32, which a GPU's
TF32 and nondeterministic cuDNN algorithms would not meet. A test marked `gpu` runs on CUDA
instead (Keras's default device and subprocesses' too), and is skipped where there is none."""

import collections
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

# Keras's torch backend takes its default device once, at import: KERAS_TORCH_DEVICE, else cuda
# when torch sees one. Subprocesses inherit it.
os.environ["KERAS_TORCH_DEVICE"] = "cpu"

import keras_cifar  # noqa: E402,F401  (selects the torch backend before anything imports tensorflow)
import keras  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Asked before any test hides the GPUs from its subprocesses (CUDA reads CUDA_VISIBLE_DEVICES
# once per process, at its first use).
CUDA = torch.cuda.is_available()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test that needs torchvision (the original resnet18, torchvision's state dicts) is skipped,
    saying why, where no torchvision built for the installed torch is installed: keras-cifar does
    not require it, so that installing never replaces a user's torch."""
    try:
        return (yield)
    except ModuleNotFoundError as error:
        if error.name != "torchvision":
            raise
        pytest.skip(str(error))


def import_torchvision():
    """torchvision for a test module that uses it throughout, or the module skipped, saying why."""
    from keras_cifar.models.pretrained import torchvision_mismatch

    mismatch = torchvision_mismatch()
    if mismatch:
        pytest.skip(f"needs torchvision: {mismatch}", allow_module_level=True)
    import torchvision

    return torchvision


class optional_import:
    """`module` (or its `attribute`), imported at its first use: collection never needs TensorFlow,
    TFDS or TensorBoard (a GPU image has none), and a test that uses one where it is missing is
    skipped there, naming it."""

    def __init__(self, module, attribute=None):
        self._module, self._attribute = module, attribute

    def _load(self):
        loaded = pytest.importorskip(self._module)
        return getattr(loaded, self._attribute) if self._attribute else loaded

    def __getattr__(self, name):
        if name.startswith("_"):  # pytest's and copy's probes for special attributes
            raise AttributeError(name)
        return getattr(self._load(), name)

    def __call__(self, *args, **kwargs):
        return self._load()(*args, **kwargs)


def pytest_collection_modifyitems(config, items):
    if not CUDA:
        skip = pytest.mark.skip(reason="needs a CUDA GPU: torch sees none")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def pinned_device(request, monkeypatch):
    """CPU tests: no CUDA for `device='auto'` here nor in subprocesses. `gpu` tests: CUDA for Keras
    here and in subprocesses. -> the device name."""
    if request.node.get_closest_marker("gpu"):
        monkeypatch.setenv("KERAS_TORCH_DEVICE", "cuda")
        with keras.device("cuda"):
            yield "cuda"
        return
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield "cpu"

def _real_data():
    """KERAS_CIFAR_DATA, else ../shared/data/cifar10-jpeg.tar.gz beside the checkout."""
    if os.environ.get("KERAS_CIFAR_DATA"):
        return Path(os.environ["KERAS_CIFAR_DATA"])
    return REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


REAL_DATA = _real_data()


def extract_subset(destination, per_class_train, per_class_test, archive=REAL_DATA):
    """Extracts the first N images per class and split of the real archive into an image folder."""
    if not archive.is_file():
        pytest.fail(f"The real CIFAR-10 archive is missing: {archive}. Set KERAS_CIFAR_DATA to its path.")
    limits = {"train": per_class_train, "test": per_class_test}
    counts = collections.Counter()
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or counts[parts[0], parts[1]] >= limits[parts[0]]:
                continue
            counts[parts[0], parts[1]] += 1
            target = Path(destination, *parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    return Path(destination)


@pytest.fixture(scope="session")
def real_folder_2k(tmp_path_factory):
    """2,000 real training images (200 per class) and 1,000 test images (100 per class)."""
    return extract_subset(tmp_path_factory.mktemp("real2k"), 200, 100)


@pytest.fixture(scope="session")
def real_folder_small(tmp_path_factory):
    """300 real training images (30 per class) and 100 test images (10 per class)."""
    return extract_subset(tmp_path_factory.mktemp("real_small"), 30, 10)


@pytest.fixture(scope="session")
def real_images(real_folder_small):
    """A few real test images as a uint8 array (N, 32, 32, 3), RGB."""
    import cv2

    files = sorted(real_folder_small.glob("test/*/*.jpg"))[:24]
    return np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])


@pytest.fixture
def data_dir(tmp_path):
    """A fresh TFDS data directory."""
    path = tmp_path / "tfds"
    path.mkdir()
    return path


def random_images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)


BLOCKER = '''
import sys

BLOCKED = ("tensorflow", "tensorflow_datasets", "tensorboard")


class _NotInstalled:
    """A finder of sys.meta_path that finds nothing of TensorFlow, TFDS and TensorBoard, as if
    they were not installed (`importlib.util.find_spec` gives None, `import` fails)."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)


sys.meta_path[:] = [_NotInstalled(finder) for finder in sys.meta_path]
'''


@pytest.fixture
def without_tensorflow(tmp_path):
    """Environment variables for a subprocess in which TensorFlow cannot be found."""
    folder = tmp_path / "blocker"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")]))}
