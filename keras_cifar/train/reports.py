"""End-of-run TensorBoard summaries: confusion matrix, per-class accuracy, HParams."""

import os

from keras_cifar.train.config import to_dict
from keras_cifar.train.evaluation import confusion_matrix_png


def hparams_of(config):
    """The config as HParams values (TensorBoard takes bool, number or string)."""
    values = {}
    for key, value in to_dict(config).items():
        if key in ("log_dir", "data_dir"):
            continue
        values[key] = "none" if value is None else value
    return values


def write_final_summaries(run_path, config, report, summary, step):
    from keras_cifar.tensorflow_cpu import import_tensorflow

    tf = import_tensorflow()
    from tensorboard.plugins.hparams import api as hp

    png = confusion_matrix_png(report, title=f"{config.model}: {summary['eval_split']}")
    with open(os.path.join(run_path, "confusion_matrix.png"), "wb") as handle:
        handle.write(png)
    writer = tf.summary.create_file_writer(run_path)
    with writer.as_default(step=step):
        tf.summary.image("confusion_matrix", tf.expand_dims(tf.io.decode_png(png, channels=4), 0))
        rows = ["| class | accuracy (%) | correct | total |", "|---|---|---|---|"]
        for name, row in report["per_class"].items():
            if row["accuracy"] is not None:
                tf.summary.scalar(f"per_class_accuracy/{name}", 100.0 * row["accuracy"])
            accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}"
            rows.append(f"| {name} | {accuracy} | {row['correct']} | {row['total']} |")
        tf.summary.text("per_class_accuracy", "\n".join(rows))
        hp.hparams(hparams_of(config), trial_id=os.path.basename(os.path.abspath(run_path)))
        tf.summary.scalar("hparams/final_accuracy", summary["final_accuracy"])
        if summary.get("best_accuracy") is not None:
            tf.summary.scalar("hparams/best_accuracy", summary["best_accuracy"])
        tf.summary.scalar("hparams/train_time_s", summary["train_time_s"])
    writer.close()
