"""Accuracy, per-class accuracy and the confusion matrix, from raw predictions."""

import numpy as np


def predict_logits(model, split, batch_size):
    """The logits of every image of `split`, in order. In a data-parallel `fit` each rank predicts
    its own disjoint shard (images rank, rank + world_size, ...) and every rank receives all of
    them: each image is predicted once, as in a single process."""
    from keras_cifar.data.loader import TensorLoader
    from keras_cifar.train import distributed

    group = distributed.current()
    loader = TensorLoader(split, batch_size, rank=group.rank, world_size=group.world_size, even_shards=False)
    if len(loader):
        logits = np.asarray(model.predict(loader.as_keras_input(), verbose=0))
    else:  # fewer images than ranks
        logits = np.zeros((0, model.output_shape[-1]), "float32")
    if not group.distributed:
        return logits
    shards = group.all_gather(logits)
    merged = np.empty((len(split.labels), logits.shape[-1]), logits.dtype)
    for rank, shard in enumerate(shards):
        merged[rank::group.world_size] = shard
    return merged


def tta_views(images):
    """airbench's level-2 test-time augmentation of uint8 NHWC `images`: (weight, view) pairs.
    The image and its mirror, and both shifted by one pixel down-right and up-left (borders
    reflected), each with its mirror; the unshifted pair weighs as much as the two shifted ones."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    height, width = images.shape[1:3]
    shifted = (padded[:, :height, :width], padded[:, 2:height + 2, 2:width + 2])
    views = [(0.25, images), (0.25, images[:, :, ::-1])]
    for view in shifted:
        views += [(0.125, view), (0.125, view[:, :, ::-1])]
    return [(weight, np.ascontiguousarray(view)) for weight, view in views]


def predict_logits_tta(model, split, batch_size, with_plain=False):
    """`predict_logits` averaged over `tta_views` (6 forward passes). `with_plain`: -> (the TTA
    logits, the logits of the images themselves), the first view's, without a seventh pass."""
    from keras_cifar.data.dataset import Split

    total = plain = None
    for weight, view in tta_views(np.asarray(split.images)):
        logits = predict_logits(model, Split(view, split.labels), batch_size)
        plain = logits if plain is None else plain
        total = weight * logits.astype("float64") + (0.0 if total is None else total)
    return (total.astype("float32"), plain) if with_plain else total.astype("float32")


def confusion_matrix(labels, predictions, num_classes):
    """`matrix[true, predicted]` counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def classification_report(labels, logits, class_names):
    labels = np.asarray(labels)
    predictions = np.asarray(logits).argmax(axis=-1)
    matrix = confusion_matrix(labels, predictions, len(class_names))
    support = matrix.sum(axis=1)
    per_class = {
        name: {"accuracy": float(matrix[i, i] / support[i]) if support[i] else None, "correct": int(matrix[i, i]),
               "total": int(support[i])}
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": float((predictions == labels).mean()) if len(labels) else 0.0,
        "correct": int((predictions == labels).sum()),
        "total": int(len(labels)),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }


def format_report(report):
    lines = [f"Accuracy: {100 * report['accuracy']:.2f}% ({report['correct']:,} of {report['total']:,})", ""]
    width = max(len(name) for name in report["class_names"])
    lines.append(f"{'class':<{width}}  accuracy  correct  total")
    for name, row in report["per_class"].items():
        accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:7.2f}%"
        lines.append(f"{name:<{width}}  {accuracy:>8}  {row['correct']:>7,}  {row['total']:>5,}")
    lines += ["", "Confusion matrix (rows: true class, columns: predicted class)"]
    short = [name[:5] for name in report["class_names"]]
    lines.append(" " * (width + 1) + " ".join(f"{s:>5}" for s in short))
    for name, row in zip(report["class_names"], report["confusion_matrix"]):
        lines.append(f"{name:<{width}} " + " ".join(f"{count:>5}" for count in row))
    return "\n".join(lines)


def confusion_matrix_png(report, title="Confusion matrix"):
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    matrix = np.asarray(report["confusion_matrix"])
    names = report["class_names"]
    figure, axes = plt.subplots(figsize=(7, 6), dpi=100)
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{title} (accuracy {100 * report['accuracy']:.2f}%)")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        axes.text(j, i, str(count), ha="center", va="center", fontsize=7,
                  color="white" if count > threshold else "black")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
