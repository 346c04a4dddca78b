"""Writers of every local CIFAR-10 layout, for tests: the same arrays in each format."""

import io
import os
import pickle
import tarfile

import cv2
import numpy as np

from keras_cifar.data.readers import CIFAR10_CLASSES


def hwc_to_rows(images):
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_python_batches(folder, train, test, batches=2):
    os.makedirs(folder, exist_ok=True)
    parts = np.array_split(np.arange(len(train[0])), batches)
    for number, index in enumerate(parts, start=1):
        _pickle(os.path.join(folder, f"data_batch_{number}"), train[0][index], train[1][index], f"batch {number}")
    _pickle(os.path.join(folder, "test_batch"), test[0], test[1], "testing batch")
    with open(os.path.join(folder, "batches.meta"), "wb") as handle:
        pickle.dump({b"label_names": [n.encode() for n in CIFAR10_CLASSES]}, handle, protocol=2)
    return folder


def _pickle(path, images, labels, name):
    batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels], b"data": hwc_to_rows(images),
             b"filenames": [f"{i}.png".encode() for i in range(len(labels))]}
    with open(path, "wb") as handle:
        pickle.dump(batch, handle, protocol=2)


def write_binary_batches(folder, train, test, batches=2):
    os.makedirs(folder, exist_ok=True)
    parts = np.array_split(np.arange(len(train[0])), batches)
    for number, index in enumerate(parts, start=1):
        _records(os.path.join(folder, f"data_batch_{number}.bin"), train[0][index], train[1][index])
    _records(os.path.join(folder, "test_batch.bin"), test[0], test[1])
    with open(os.path.join(folder, "batches.meta.txt"), "w") as handle:
        handle.write("\n".join(CIFAR10_CLASSES) + "\n")
    return folder


def _records(path, images, labels):
    records = np.concatenate([np.asarray(labels, np.uint8)[:, None], hwc_to_rows(images)], axis=1)
    with open(path, "wb") as handle:
        handle.write(records.astype(np.uint8).tobytes())


def write_image_folder(folder, train, test, extension=".png"):
    for split, (images, labels) in (("train", train), ("test", test)):
        for index, (image, label) in enumerate(zip(images, labels)):
            path = os.path.join(folder, split, CIFAR10_CLASSES[label], f"{index:05d}{extension}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return folder


def tar_folder(source, archive, arcname):
    mode = "w:gz" if archive.endswith(".gz") else "w"
    with tarfile.open(archive, mode) as tar:
        tar.add(source, arcname=arcname)
    return archive


def truncate(path, keep_fraction=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: int(len(data) * keep_fraction)])
    return path


def png_bytes(image):
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return io.BytesIO(encoded.tobytes()).getvalue()


def canonical(images, labels):
    """Rows sorted by content, so two sources can be compared whatever their order."""
    keys = [image.tobytes() + bytes([label]) for image, label in zip(images, labels)]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return images[order], np.asarray(labels)[order]
