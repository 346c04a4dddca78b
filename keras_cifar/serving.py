"""Running an exported file (`.onnx` with onnxruntime, `.pt2` with torch) as `predict` runs a
checkpoint: `load_exported(path).predict(images)` -> float32 logits."""

import json
import os

import numpy as np

from keras_cifar.errors import CheckpointError, KerasCifarError
from keras_cifar.export import FORMATS, INPUT_NAME, METADATA_FILE, decode_onnx_metadata, require_packages

EXPORTED_SUFFIXES = tuple(FORMATS.values())


def is_exported(path):
    return str(path).endswith(EXPORTED_SUFFIXES)


class ExportedModel:
    """An exported file with its metadata; `predict(images)` takes uint8 NHWC images."""

    def __init__(self, path, run, metadata):
        self.path = path
        self._run = run
        self.metadata = metadata

    @property
    def class_names(self):
        return self.metadata.get("class_names") or []

    def predict(self, images, batch_size=256, verbose=0):
        images = np.ascontiguousarray(images, dtype=np.uint8)
        return np.concatenate([self._run(images[start:start + batch_size])
                               for start in range(0, len(images), batch_size)])


def load_exported(path):
    if not os.path.isfile(path):
        raise CheckpointError(f"The exported model {path!r} does not exist.")
    try:
        return _load_onnx(path) if path.endswith(FORMATS["onnx"]) else _load_pt2(path)
    except KerasCifarError:  # missing packages: already explained
        raise
    except Exception as error:
        kind = "an ONNX" if path.endswith(FORMATS["onnx"]) else "a torch.export (.pt2)"
        raise CheckpointError(
            f"Cannot load the exported model {path!r} ({type(error).__name__}: {str(error).splitlines()[0][:300]}). "
            f"It is truncated, corrupt, or not {kind} file."
        ) from None


def _load_onnx(path):
    require_packages(("onnxruntime",), "Running an ONNX file")
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    metadata = decode_onnx_metadata(session.get_modelmeta().custom_metadata_map)
    return ExportedModel(path, lambda images: session.run(None, {INPUT_NAME: images})[0], metadata)


def _load_pt2(path):
    import torch

    extra = {METADATA_FILE: ""}
    module = torch.export.load(path, extra_files=extra).module()

    def run(images):
        with torch.no_grad():
            return module(torch.from_numpy(images)).numpy()

    return ExportedModel(path, run, json.loads(extra[METADATA_FILE] or "{}"))
