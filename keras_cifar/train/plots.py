"""Training curves from the `metrics.csv` of run folders."""

import csv
import os

from keras_cifar.errors import KerasCifarError, UsageError


def read_metrics(path):
    csv_path = os.path.join(path, "metrics.csv") if os.path.isdir(path) else path
    if not os.path.isfile(csv_path):
        raise UsageError(f"{path!r} has no metrics.csv.")
    with open(csv_path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "epoch" not in rows[0]:
        raise UsageError(f"{csv_path!r} is empty or not a keras-cifar metrics file.")
    return rows


def plot_runs(paths, output, labels=None, title=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    for index, path in enumerate(paths):
        rows = read_metrics(path)
        label = labels[index] if labels else os.path.basename(os.path.normpath(path))
        epochs = [int(row["epoch"]) for row in rows]
        for axis, key, name in ((axes[0], "accuracy", "train"), (axes[1], "val_accuracy", "test")):
            values = [100 * float(row[key]) for row in rows if row.get(key) not in (None, "")]
            if values:
                axis.plot(epochs[:len(values)], values, marker=".", label=label)
                axis.set_title(f"{name} accuracy")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.set_ylabel("accuracy (%)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    try:
        figure.savefig(output)
    except (OSError, ValueError) as error:  # missing folder, unknown image format
        raise KerasCifarError(f"Cannot write {output!r}: {error}") from None
    finally:
        plt.close(figure)
