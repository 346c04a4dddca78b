"""`predict`: classify image files, each preprocessed exactly as training data is."""

import os

import numpy as np

from keras_cifar.data.readers import decode_image


def expand_paths(paths):
    """Files as given; folders become their files (sorted, not recursive, hidden files skipped)."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += [os.path.join(path, name) for name in sorted(os.listdir(path))
                      if not name.startswith(".") and os.path.isfile(os.path.join(path, name))]
        else:
            files.append(path)
    return files


def read_images(paths):
    """-> (uint8 array of the readable images, their paths, [{file, reason}] of the rest)."""
    images, good, failures = [], [], []
    for path in expand_paths(paths):
        try:
            with open(path, "rb") as handle:
                image = decode_image(handle.read())
        except OSError as error:
            failures.append({"file": path, "reason": error.strerror or str(error)})
            continue
        if image is None:
            failures.append({"file": path, "reason": "not an image OpenCV can decode"})
            continue
        images.append(image)
        good.append(path)
    return np.stack(images) if images else np.zeros((0, 32, 32, 3), np.uint8), good, failures


def softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def predict_files(model, paths, class_names, top_k=3, batch_size=256):
    images, good, failures = read_images(paths)
    results = []
    if len(images):
        probabilities = softmax(np.asarray(model.predict(images, batch_size=batch_size, verbose=0), np.float64))
        for path, row in zip(good, probabilities):
            order = np.argsort(-row)[:top_k]
            results.append({"file": path, "top": [{"class": class_names[i], "probability": float(row[i])}
                                                  for i in order]})
    return results, failures


def class_names_of_run(run_path, num_classes):
    """The class names a run was trained on (its state.json), else CIFAR-10's, else class_0..."""
    from keras_cifar.data import CIFAR10_CLASSES
    from keras_cifar.train import run_dir as rd

    state_path = os.path.join(run_path, rd.STATE)
    if os.path.exists(state_path):
        names = rd.read_json(state_path).get("class_names") or []
        if len(names) == num_classes:
            return names
    if num_classes == len(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]
