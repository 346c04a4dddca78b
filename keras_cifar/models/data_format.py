"""The activation layouts of the model zoo."""

import keras

DATA_FORMATS = ("channels_last", "channels_first")


def standardize_data_format(data_format):
    """`None` means Keras's configured `image_data_format()`."""
    if data_format is None:
        return keras.config.image_data_format()
    if data_format not in DATA_FORMATS:
        raise ValueError(f"`data_format` must be one of {DATA_FORMATS}. Received: data_format={data_format!r}")
    return data_format


def channel_axis(data_format):
    return 1 if standardize_data_format(data_format) == "channels_first" else -1
