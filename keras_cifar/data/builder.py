"""A TFDS builder over the local CIFAR-10 layouts, so every source goes
through one TFDS pipeline: prepared once into TFDS records, then read as any
TFDS dataset."""

from keras_cifar.data import readers
from keras_cifar.data.sources import DataSource
from keras_cifar.tensorflow_cpu import import_tfds

tfds = import_tfds()  # this module is imported only when a local source is prepared


class Cifar10Local(tfds.core.GeneratorBasedBuilder):
    """CIFAR-10 (or any 32x32 image-folder dataset) from a local copy."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Local CIFAR-10 layouts: Python and binary batches, image folders."}

    def __init__(self, source: DataSource, **kwargs):
        self.source = source
        self.image_folder = readers.ImageFolder(source.path, source.prefix) if source.kind == "image_folder" else None
        super().__init__(**kwargs)

    @property
    def class_names(self):
        return self.image_folder.class_names if self.image_folder else readers.CIFAR10_CLASSES

    def _info(self):
        return self.dataset_info_from_configs(
            description=f"Local copy: {self.source.describe()}",
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "image": tfds.features.Image(shape=(readers.IMAGE_SIZE, readers.IMAGE_SIZE, 3)),
                    "label": tfds.features.ClassLabel(names=list(self.class_names)),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in readers.SPLITS}

    def _generate_examples(self, split):
        for key, image, label in readers.read_examples(self.source, split, self.image_folder):
            yield key, {"id": key, "image": image, "label": label}
