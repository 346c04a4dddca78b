"""The end of a run: summary.json's contents, the lines printed, and the TensorBoard summaries
(confusion matrix, per-class accuracy, HParams)."""

import os

from keras_cifar.train import distributed
from keras_cifar.train.config import to_dict
from keras_cifar.train.device import describe_device, gpu_settings
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


def format_duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def timing_of(config, state, report, clock, prepare_s, tta):
    """summary.json's timing: preparation (data, model, whitening, compile) before the first
    step, the first step (graph capture), and the time to `target_accuracy`: the time of training
    and evaluation (not of the writes between epochs) from the first step to the end of the epoch
    that reached it, or, when only the final TTA
    evaluation reached it, the whole training time plus that evaluation (as airbench counts)."""
    history = state["history"]
    train_s = history[-1].get("elapsed_s") if history else None
    target = state.get("target")
    if target is None and config.target_accuracy is not None:
        reached = tta is not None and report["accuracy"] >= config.target_accuracy and train_s is not None
        target = {"accuracy": config.target_accuracy, "reached": False}
        if reached:
            target = {"accuracy": config.target_accuracy, "epoch": state["completed_epochs"],
                      "elapsed_s": train_s + tta["time_s"], "value": report["accuracy"], "with_tta": True}
    if target is not None:
        target = {"reached": True, **target}
    return {
        "prepare_s": prepare_s,
        "first_step_s": clock.first_step_s,
        "elapsed_s": train_s,
        "tta": tta is not None,
        "tta_time_s": tta["time_s"] if tta else None,
        "final_accuracy_without_tta": tta["plain_accuracy"] if tta else None,
        "target": target,
    }


def target_line(timing):
    target = timing["target"]
    if not target["reached"]:
        return f"Target accuracy {100 * target['accuracy']:.2f}% not reached."
    how = "with the final test-time augmentation" if target["with_tta"] else f"at epoch {target['epoch']}"
    first = f"; first step {timing['first_step_s']:.1f} s" if timing["first_step_s"] is not None else ""
    return (f"Reached {100 * target['accuracy']:.2f}% ({100 * target['value']:.2f}%) {how} after "
            f"{format_duration(target['elapsed_s'])} of training (from the first step{first}, graph capture "
            f"included; {timing['prepare_s']:.1f} s of data and model preparation before it).")


def summary_of(config, state, report, data, device, run_path):
    history = state["history"]
    best = state.get("best") or {}
    return {
        "run": os.path.basename(os.path.abspath(run_path)),
        "model": config.model,
        "epochs": state["completed_epochs"],
        "eval_split": data.eval_split_name,
        "best_accuracy": best.get("value"),
        "best_epoch": best.get("epoch"),
        "final_accuracy": report["accuracy"],
        "final_loss": history[-1].get("val_loss") if history else None,
        "final_train_accuracy": history[-1].get("accuracy") if history else None,
        "per_class_accuracy": {k: v["accuracy"] for k, v in report["per_class"].items()},
        "train_time_s": sum(row.get("epoch_time_s", 0.0) for row in history),
        "device": device,
        "device_name": describe_device(device),
        "gpu_settings": gpu_settings(device),
        "data": data.source,
        "config": to_dict(config),
        # batch_size is per process; under torchrun the global batch is world_size x batch_size
        **distributed.current().summary(config),
    }
