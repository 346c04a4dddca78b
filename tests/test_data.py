"""The data layer: every source through TFDS, the same arrays from each, caching,
and a clear error for every kind of bad input."""

import os
import shutil
import socket

import cv2
import numpy as np
import pytest

from keras_cifar.data import CIFAR10_CLASSES, load_cifar, resolve_source
from keras_cifar.errors import DataError, UsageError
from tests import data_formats as fmt
from tests.conftest import optional_import

tfds = optional_import("tensorflow_datasets")
builder = optional_import("keras_cifar.data.builder")  # imports TFDS


@pytest.fixture(scope="module")
def arrays(real_folder_small):
    """300 train and 100 test real images as arrays, the content of every written format."""
    data = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label, name in enumerate(CIFAR10_CLASSES):
            for path in sorted((real_folder_small / split / name).glob("*.jpg")):
                images.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
                labels.append(label)
        data[split] = (np.stack(images), np.array(labels))
    return data


def layouts(root, arrays):
    train, test = arrays["train"], arrays["test"]
    py = fmt.write_python_batches(os.path.join(root, "py", "cifar-10-batches-py"), train, test)
    bin_ = fmt.write_binary_batches(os.path.join(root, "bin", "cifar-10-batches-bin"), train, test)
    folder = fmt.write_image_folder(os.path.join(root, "folder"), train, test)
    return {
        "python dir": py,
        "python parent dir": os.path.dirname(py),  # ./data as torchvision leaves it
        "python tar.gz": fmt.tar_folder(py, os.path.join(root, "cifar-10-python.tar.gz"), "cifar-10-batches-py"),
        "binary dir": bin_,
        "binary tar.gz": fmt.tar_folder(bin_, os.path.join(root, "cifar-10-binary.tar.gz"), "cifar-10-batches-bin"),
        "image folder": folder,
        "image folder tar": fmt.tar_folder(folder, os.path.join(root, "folder.tar"), "."),
        "image folder tar.gz with top dir": fmt.tar_folder(folder, os.path.join(root, "folder.tar.gz"), "cifar10"),
    }


def test_every_local_format_yields_the_same_arrays(arrays, tmp_path):
    expected = {split: fmt.canonical(*arrays[split]) for split in ("train", "test")}
    kinds = {}
    for name, path in layouts(str(tmp_path / "src"), arrays).items():
        data = load_cifar(path, data_dir=str(tmp_path / "tfds"), log=lambda message: None)
        kinds[name] = resolve_source(path).kind
        assert data.class_names == CIFAR10_CLASSES, name
        for split in ("train", "test"):
            got = getattr(data, split)
            assert got.images.dtype == np.uint8 and got.images.shape[1:] == (32, 32, 3)
            images, labels = fmt.canonical(got.images, got.labels)
            np.testing.assert_array_equal(images, expected[split][0], err_msg=name)
            np.testing.assert_array_equal(labels, expected[split][1], err_msg=name)
    assert kinds == {
        "python dir": "python", "python parent dir": "python", "python tar.gz": "python",
        "binary dir": "binary", "binary tar.gz": "binary", "image folder": "image_folder",
        "image folder tar": "image_folder", "image folder tar.gz with top dir": "image_folder",
    }


def test_real_data_slice(real_folder_small, tmp_path):
    """A slice of ../shared/data/cifar10-jpeg.tar.gz, as a tar.gz of its image-folder layout."""
    archive = fmt.tar_folder(str(real_folder_small), str(tmp_path / "slice.tar.gz"), ".")
    data = load_cifar(archive, data_dir=str(tmp_path / "tfds"), log=lambda message: None)
    assert (len(data.train), len(data.test)) == (300, 100)
    assert data.class_names == CIFAR10_CLASSES
    assert np.bincount(data.train.labels).tolist() == [30] * 10
    mean = data.train.images.reshape(-1, 3).mean(axis=0) / 255
    np.testing.assert_allclose(mean, [0.49, 0.48, 0.45], atol=0.06)  # CIFAR-10's per-channel means


def test_prepared_once_then_read_from_cache(arrays, tmp_path, monkeypatch):
    source = fmt.write_python_batches(str(tmp_path / "cifar-10-batches-py"), arrays["train"], arrays["test"])
    messages = []
    first = load_cifar(source, data_dir=str(tmp_path / "tfds"), log=messages.append)
    assert any("Preparing" in m for m in messages)

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached source was decoded again")

    monkeypatch.setattr(builder.Cifar10Local, "_generate_examples", forbidden)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "as_dataset", forbidden)
    messages.clear()
    second = load_cifar(source, data_dir=str(tmp_path / "tfds"), log=messages.append)
    assert not messages
    np.testing.assert_array_equal(first.train.images, second.train.images)
    np.testing.assert_array_equal(first.test.labels, second.test.labels)


def test_changed_source_is_prepared_again(arrays, tmp_path):
    source = fmt.write_image_folder(str(tmp_path / "folder"), arrays["train"], arrays["test"])
    assert len(load_cifar(source, data_dir=str(tmp_path / "tfds"), log=print).train) == 300
    os.remove(os.path.join(source, "train", "cat", sorted(os.listdir(os.path.join(source, "train", "cat")))[0]))
    assert len(load_cifar(source, data_dir=str(tmp_path / "tfds"), log=print).train) == 299


def test_canonical_tfds_path_with_mock_data(data_dir):
    with tfds.testing.mock_data(num_examples=40):
        data = load_cifar("cifar10", data_dir=str(data_dir), log=print)
    assert data.source == "TFDS cifar10"
    assert data.class_names == CIFAR10_CLASSES
    assert data.train.images.shape == (40, 32, 32, 3) and data.train.images.dtype == np.uint8
    assert data.test.labels.min() >= 0 and data.test.labels.max() < 10


def test_val_split_is_held_out_of_train_deterministically(arrays, tmp_path):
    source = fmt.write_binary_batches(str(tmp_path / "bin"), arrays["train"], arrays["test"])
    first = load_cifar(source, data_dir=str(tmp_path / "tfds"), val_split=0.2, seed=5, log=print)
    again = load_cifar(source, data_dir=str(tmp_path / "tfds"), val_split=0.2, seed=5, log=print)
    other = load_cifar(source, data_dir=str(tmp_path / "tfds"), val_split=0.2, seed=6, log=print)
    assert (len(first.train), len(first.val), len(first.test)) == (240, 60, 100)
    assert first.eval_split_name == "val"
    np.testing.assert_array_equal(first.val.images, again.val.images)
    assert not np.array_equal(first.val.images, other.val.images)
    train_rows = {image.tobytes() for image in first.train.images}
    assert not any(image.tobytes() in train_rows for image in first.val.images)
    with pytest.raises(UsageError, match="val_split"):
        load_cifar(source, data_dir=str(tmp_path / "tfds"), val_split=1.0)


# --- bad input -------------------------------------------------------------------------------------


def assert_lists_layouts(message):
    for layout in ("cifar-10-batches-py", "cifar-10-batches-bin", "train/<class>/<image>", "'cifar10'"):
        assert layout in message


def test_missing_path(tmp_path):
    with pytest.raises(DataError) as error:
        load_cifar(str(tmp_path / "nowhere"), data_dir=str(tmp_path / "tfds"))
    assert "does not exist" in str(error.value)
    assert_lists_layouts(str(error.value))


@pytest.mark.parametrize("make", ["empty dir", "text file", "zip file", "unrelated tar"])
def test_path_matching_no_layout(make, tmp_path):
    path = tmp_path / "thing"
    if make == "empty dir":
        path.mkdir()
    elif make == "text file":
        path.write_text("hello")
    elif make == "zip file":
        import zipfile

        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("a.txt", "a")
    else:
        (tmp_path / "notes").mkdir()
        (tmp_path / "notes" / "a.txt").write_text("a")
        fmt.tar_folder(str(tmp_path / "notes"), str(path), "notes")
    with pytest.raises(DataError) as error:
        load_cifar(str(path), data_dir=str(tmp_path / "tfds"))
    assert "matches no CIFAR-10 layout" in str(error.value)
    assert_lists_layouts(str(error.value))
    assert not (tmp_path / "tfds" / "keras_cifar_local").exists()


@pytest.mark.parametrize("layout", ["python tar.gz", "binary tar.gz", "image folder tar.gz with top dir"])
def test_truncated_archive(layout, arrays, tmp_path):
    path = layouts(str(tmp_path / "src"), arrays)[layout]
    fmt.truncate(path, 0.6)
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_cifar(path, data_dir=str(tmp_path / "tfds"), log=print)
    assert_nothing_half_written(tmp_path / "tfds")


def assert_nothing_half_written(data_dir):
    leftovers = [p for p in data_dir.rglob("*") if "incomplete" in p.name or p.suffix == ".tmp"]
    assert not leftovers
    assert not list(data_dir.rglob("*.npz"))


def test_corrupt_python_batch(arrays, tmp_path):
    folder = fmt.write_python_batches(str(tmp_path / "cifar-10-batches-py"), arrays["train"], arrays["test"])
    fmt.truncate(os.path.join(folder, "data_batch_2"), 0.5)
    with pytest.raises(DataError, match="data_batch_2 .* truncated or corrupt"):
        load_cifar(folder, data_dir=str(tmp_path / "tfds"), log=print)
    assert_nothing_half_written(tmp_path / "tfds")
    # Repaired, the same data dir prepares cleanly: the failure left nothing behind.
    fmt.write_python_batches(folder, arrays["train"], arrays["test"])
    assert len(load_cifar(folder, data_dir=str(tmp_path / "tfds"), log=print).train) == 300


def test_python_batch_that_would_run_code(arrays, tmp_path):
    import pickle

    folder = fmt.write_python_batches(str(tmp_path / "cifar-10-batches-py"), arrays["train"], arrays["test"])

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    with open(os.path.join(folder, "test_batch"), "wb") as handle:
        pickle.dump({b"data": Exploit(), b"labels": []}, handle)
    with pytest.raises(DataError, match="test_batch"):
        load_cifar(folder, data_dir=str(tmp_path / "tfds"), log=print)
    assert not os.path.exists("pwned")


def test_corrupt_binary_batch(arrays, tmp_path):
    folder = fmt.write_binary_batches(str(tmp_path / "cifar-10-batches-bin"), arrays["train"], arrays["test"])
    with open(os.path.join(folder, "test_batch.bin"), "ab") as handle:
        handle.write(b"\x00" * 100)  # no longer a whole number of 3073-byte records
    with pytest.raises(DataError, match="test_batch.bin .* truncated or corrupt"):
        load_cifar(folder, data_dir=str(tmp_path / "tfds"), log=print)


def test_incomplete_batch_set(arrays, tmp_path):
    folder = fmt.write_binary_batches(str(tmp_path / "cifar-10-batches-bin"), arrays["train"], arrays["test"])
    os.remove(os.path.join(folder, "test_batch.bin"))
    with pytest.raises(DataError):
        load_cifar(str(tmp_path / "cifar-10-batches-bin"), data_dir=str(tmp_path / "tfds"), log=print)


@pytest.mark.parametrize("remove", ["train", "test"])
def test_image_folder_without_a_split(remove, arrays, tmp_path):
    folder = fmt.write_image_folder(str(tmp_path / "folder"), arrays["train"], arrays["test"])
    shutil.rmtree(os.path.join(folder, remove))
    with pytest.raises(DataError, match=f"no '{remove}/'"):
        load_cifar(folder, data_dir=str(tmp_path / "tfds"), log=print)


def test_image_folder_with_different_classes(arrays, tmp_path):
    folder = fmt.write_image_folder(str(tmp_path / "folder"), arrays["train"], arrays["test"])
    os.rename(os.path.join(folder, "test", "cat"), os.path.join(folder, "test", "kitten"))
    with pytest.raises(DataError) as error:
        load_cifar(folder, data_dir=str(tmp_path / "tfds"), log=print)
    assert "only in train: ['cat']" in str(error.value) and "only in test: ['kitten']" in str(error.value)


def test_image_folder_oddities_are_converted_or_skipped(arrays, tmp_path):
    """Non-image files are skipped and counted; grayscale, RGBA, 16-bit and other-size images
    become 32x32 RGB."""
    folder = fmt.write_image_folder(str(tmp_path / "folder"), arrays["train"], arrays["test"])
    cat = os.path.join(folder, "train", "cat")
    base = arrays["train"][0][0]
    gray = cv2.cvtColor(base, cv2.COLOR_RGB2GRAY)
    cv2.imwrite(os.path.join(cat, "gray.png"), gray)
    cv2.imwrite(os.path.join(cat, "rgba.png"), np.dstack([cv2.cvtColor(base, cv2.COLOR_RGB2BGR),
                                                         np.full((32, 32), 128, np.uint8)]))
    cv2.imwrite(os.path.join(cat, "big.jpg"), np.full((64, 48, 3), (10, 20, 30), np.uint8))
    cv2.imwrite(os.path.join(cat, "deep.png"), np.full((32, 32, 3), 65535, np.uint16))
    (tmp_path / "folder" / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "folder" / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "folder" / "train" / "cat" / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "folder" / "train" / "cat" / "empty.jpg").write_bytes(b"")
    messages = []
    data = load_cifar(folder, data_dir=str(tmp_path / "tfds"), log=messages.append)
    assert len(data.train) == 300 + 4
    skipped = [m for m in messages if m.startswith("Skipped")]
    assert skipped and skipped[0].startswith("Skipped 4 file(s)")
    rows = {image.tobytes() for image in data.train.images}
    assert np.repeat(gray[:, :, None], 3, axis=2).tobytes() in rows
    assert base.tobytes() in rows  # the RGBA image without its alpha
    assert np.full((32, 32, 3), (30, 20, 10), np.uint8).tobytes() in rows  # resized, BGR -> RGB
    assert np.full((32, 32, 3), 255, np.uint8).tobytes() in rows  # 16 bits -> 8 bits


def test_cifar10_without_internet_explains_and_leaves_nothing(data_dir, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    with pytest.raises(DataError) as error:
        load_cifar("cifar10", data_dir=str(data_dir), log=print)
    message = str(error.value)
    assert "Could not download or prepare CIFAR-10" in message
    assert "`data='./data/cifar-10-batches-py'`" in message  # the parameter; the CLI shows --data
    assert "\n" not in message
    leftovers = [p for p in data_dir.rglob("*") if "incomplete" in p.name or p.suffix in (".npz", ".tmp")]
    assert not leftovers
    monkeypatch.undo()
    with tfds.testing.mock_data(num_examples=8):  # the next run is not broken by the failed one
        assert len(load_cifar("cifar10", data_dir=str(data_dir), log=print).train) == 8


def _load_in_process(source, data_dir, barrier, queue):
    barrier.wait()
    data = load_cifar(source, data_dir=data_dir, log=lambda message: None)
    queue.put((len(data.train), int(data.train.labels.sum()), data.train.images[:5].tobytes()))


def test_simultaneous_first_loads_prepare_once(arrays, tmp_path):
    """Processes that load a new source at the same moment wait for one preparation."""
    import multiprocessing

    source = fmt.write_binary_batches(str(tmp_path / "cifar-10-batches-bin"), arrays["train"], arrays["test"])
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(3), context.Queue()
    workers = [context.Process(target=_load_in_process, args=(source, str(tmp_path / "tfds"), barrier, queue))
               for _ in range(3)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(set(results)) == 1 and results[0][0] == 300
    assert len(list((tmp_path / "tfds").rglob("*.npz"))) == 1
