"""`fit`: trains a model with Keras `fit` into a run folder, resumable; data-parallel under torchrun
(`keras_cifar.train.distributed`: rank 0 owns the run folder, every rank trains)."""

import contextlib
import dataclasses
import os
import shutil
import time

import keras

from keras_cifar import _backend, tensorflow_cpu
from keras_cifar.data import TensorLoader, load_cifar
from keras_cifar.data.augment import Augmentation
from keras_cifar.errors import (CheckpointError, ConfigError, KerasCifarError, StorageError, TrainingError,
                                UsageError)
from keras_cifar.models import create_model
from keras_cifar.train import distributed, storage
from keras_cifar.train import run_dir as rd
from keras_cifar.train.callbacks import (Checkpointer, EpochSeeder, EpochStats, EpochTensorBoard, NaNGuard,
                                         OriginalTags, RunCallbacks, TrainingClock, finish_commit)
from keras_cifar.train.checkpoints import check_compatible, check_optimizer_restored, load_checkpoint
from keras_cifar.train.config import (RESUMABLE, build_config, check_keys, coerce, model_options, read_config_file,
                                      to_dict, write_config)
from keras_cifar.train.device import (describe_device, gpu_settings, seed_everything, select_device,
                                     set_precision)
from keras_cifar.train.evaluation import classification_report, predict_logits, predict_logits_tta
from keras_cifar.losses import build_loss
from keras_cifar.train.optim import build_optimizer, restore_gradients
from keras_cifar.train.reports import write_final_summaries

# Keys a resumed run may change (declared `resumable` in RunConfig); the rest define the run and must stay.
RESUMABLE_CHANGES = RESUMABLE


class Interrupted(KerasCifarError):
    exit_code = 130


@dataclasses.dataclass
class FitResult:
    run_path: str
    summary: dict
    history: list


def resumed_config(run_path, overrides):
    """The run's saved config with the explicitly given `overrides` applied."""
    if not rd.is_run_dir(run_path) or not os.path.exists(os.path.join(run_path, rd.STATE)):
        raise CheckpointError(f"{run_path!r} is not a resumable run folder (it has no {rd.CONFIG} and {rd.STATE}).")
    saved = to_dict(build_config(read_config_file(os.path.join(run_path, rd.CONFIG))))
    given = {k: v for k, v in overrides.items() if v is not None and k != "log_dir"}
    check_keys(given, "the options")
    changed = {k: coerce(k, v) for k, v in given.items() if coerce(k, v) != saved.get(k)}
    fixed = sorted(set(changed) - RESUMABLE_CHANGES)
    if fixed:
        raise ConfigError(
            f"Cannot change {', '.join(fixed)} when resuming {run_path!r}: they define the run. "
            f"A resumed run may change only {', '.join(sorted(RESUMABLE_CHANGES))}; start a new run instead."
        )
    if "epochs" in changed and saved.get("schedule", "constant") != "constant":
        raise ConfigError(
            f"Cannot change epochs when resuming a run with the {saved['schedule']!r} schedule: the schedule "
            "was laid out for the original number of epochs. Start a new run instead."
        )
    return build_config({**saved, **changed, "log_dir": saved.get("log_dir", "logs")})


def build_model(config, num_classes):
    """The model of `config`, with the model-specific settings its registry entry declares, where set."""
    return create_model(config.model, num_classes=num_classes, data_format=config.data_format, init=config.init,
                        **model_options(config))


def new_model(config, data):
    """A freshly built model of `config`, with any weights its registry entry sets from the data."""
    from keras_cifar.models import get_model_info

    model = build_model(config, data.num_classes)
    data_init = get_model_info(config.model).data_init
    if data_init is not None:
        data_init(model, data.train.images)
    return model


def compile_model(model, config, steps_per_epoch):
    model.compile(
        optimizer=build_optimizer(config, steps_per_epoch, model),
        loss=build_loss(config),
        metrics=["accuracy"],
        jit_compile=config.jit == "compile",
    )


def make_callbacks(config, run_path, state, train_loader, eval_is_test, clock=None):
    """The callbacks of every `fit` run (the benchmarks use the same). Order matters: the
    seeder first; epoch stats before anything reads the logs; the clock before the writers (what
    runs after its `on_epoch_end` is off the time-to-accuracy clock); the checkpoint is committed
    before the logs are written, so a crash can lose a log line but never a checkpoint.

    In a data-parallel run every rank keeps the callbacks that act on training (the seeder, with
    its rank; the NaN guard, reduced over the ranks at the same steps) and only rank 0 writes."""
    group = distributed.current()
    if group.distributed:
        nan_guard = NaNGuard(check_steps=distributed.NAN_CHECK_STEPS, all_ranks=group.first_over_ranks)
    else:
        nan_guard = NaNGuard()
    callbacks = [
        EpochSeeder(config.seed, train_loader, rank=group.rank),
        EpochStats(),
        nan_guard,
    ]
    if clock is not None:
        callbacks.append(clock)
    if group.is_main:
        callbacks.append(Checkpointer(run_path, state, nan_guard))
        if config.tensorboard:
            callbacks += [OriginalTags(run_path, len(train_loader), eval_is_test=eval_is_test),
                          EpochTensorBoard(run_path)]
    return callbacks, nan_guard


def new_run_state(class_names=()):
    return {"completed_epochs": 0, "checkpoint": None, "best": None, "history": [], "class_names": list(class_names)}


def _check_sizes(config, data, world_size=1):
    if config.batch_size > len(data.train):
        raise UsageError(
            f"The batch size {config.batch_size} is larger than the {len(data.train)} training images. "
            "Lower `batch_size`."
        )
    if config.batch_size * world_size > len(data.train):
        raise UsageError(
            f"The batch size {config.batch_size} per process times {world_size} processes is larger than the "
            f"{len(data.train)} training images. Lower `batch_size` (it is per process) or start fewer processes."
        )


def _format_duration(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {seconds:02d}s" if hours else f"{minutes}m {seconds:02d}s"


def fit(config, resume_path=None, verbose=1, echo=print):
    """Trains `config` into a new run folder (or continues `resume_path`)."""
    _backend.require_torch("Training")  # before any folder is made
    previous_policy = keras.mixed_precision.global_policy()
    try:
        with distributed.session(config) as group:
            if not group.is_main:  # the other ranks print errors only
                verbose, echo = 0, (lambda message: None)
            return _fit(config, resume_path, verbose, echo)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _absolute_paths(config):
    """Local data paths as absolute paths, so `evaluate` finds the run's data from any folder."""
    data = config.data
    if data != "cifar10" or os.path.exists(data):
        data = os.path.abspath(os.path.expanduser(data))
    data_dir = os.path.abspath(os.path.expanduser(config.data_dir)) if config.data_dir else None
    return dataclasses.replace(config, data=data, data_dir=data_dir)


def _fit(config, resume_path, verbose, echo):
    started = time.perf_counter()
    if config.tensorboard and not tensorflow_cpu.installed():
        raise UsageError("TensorBoard summaries need TensorFlow, which is not installed here (`pip install "
                         "tensorflow-cpu`). Set `tensorboard=False` to train without them: metrics.csv, "
                         "summary.json and the checkpoints are written all the same.")
    config = _absolute_paths(config)
    device = select_device(config.device, model=config.model)
    set_precision(config.mixed_precision, device, config.deterministic)
    group = distributed.current()
    device = group.place(device)
    echo(f"Device: {describe_device(device)}{group.describe()}")
    with group.local_first():  # one rank per machine prepares the data, the others read its cache
        data = load_cifar(config.data, config.data_dir, config.val_split, config.seed, log=echo)
    data.limit(config.train_images, config.eval_images, config.seed)
    echo(f"Data: {data.summary()}")
    _check_sizes(config, data, group.world_size)
    if group.distributed:
        echo(distributed.describe_run(config, group))

    with keras.device(device), contextlib.ExitStack() as stack:
        seed_everything(config.seed)
        # Each rank its own shard of every epoch, all ranks the same number of steps; evaluation
        # in disjoint shards that hold every image once.
        augment = Augmentation(config.crop_padding, config.crop_fill, config.flip) if config.augment else False
        train_loader = TensorLoader(data.train, config.batch_size, shuffle=True, augment=augment,
                                    seed=config.seed, drop_remainder=config.drop_last, device=device,
                                    rank=group.rank, world_size=group.world_size)
        eval_loader = TensorLoader(data.eval, config.eval_batch_size, device=device, rank=group.rank,
                                   world_size=group.world_size, even_shards=False)
        steps_per_epoch = len(train_loader)
        if resume_path:
            # Rank 0 reads the run folder; the other ranks get its weights and optimizer state by
            # broadcast (distributed.prepare), so only rank 0 needs to see the folder.
            run_path = group.broadcast(resume_path)
            if group.is_main:
                try:
                    with storage.writing("the run folder", run_path):
                        stack.enter_context(rd.RunLock(run_path))
                except storage.WriteFailed as failed:
                    raise _storage_error(failed, None, "Nothing was trained.",
                                         f"resume with: `fit(resume_path={run_path!r})`") from None
            state = group.broadcast(rd.read_json(os.path.join(run_path, rd.STATE)) if group.is_main else None)
            checkpoint = os.path.join(run_path, state["checkpoint"]) if state.get("checkpoint") else None
            if checkpoint and group.is_main:
                model = load_checkpoint(checkpoint, compile=True)
                check_compatible(model, checkpoint, data.num_classes, model_name=config.model)
                check_optimizer_restored(model, checkpoint, state["completed_epochs"])
                model.jit_compile = config.jit == "compile"  # a run may change how it executes
            else:  # killed before the first epoch ended (start over in the same folder), or not rank 0
                model = new_model(config, data)
                compile_model(model, config, steps_per_epoch)
            if group.is_main:
                _prepare_resumed_folder(config, run_path, state, model)
            echo(f"Resuming {run_path} after epoch {state['completed_epochs']} of {config.epochs}")
        else:
            model = new_model(config, data)
            compile_model(model, config, steps_per_epoch)
            state = new_run_state(data.class_names)
            run_path = _new_run_folder(config, state, model, stack) if group.is_main else None
            run_path = group.broadcast(run_path)  # one run folder, rank 0's
        model.set_graph_capture(config.jit in ("trace", "trace-fused"), fused=config.jit == "trace-fused")
        averaged_state = getattr(model.optimizer, "model_state_averages", list)  # integration
        distributed.prepare(model, config, group, echo, averaged_state=averaged_state)
        echo(f"Model: {config.model}, {model.count_params():,} parameters; run folder: {run_path}")
        return _train(config, data, model, run_path, state, train_loader, eval_loader, device, verbose, echo,
                      started)


def _new_run_folder(config, state, model, stack):
    """A new run folder with its config and first state, which also shows that the log folder takes
    writes and has room for a checkpoint, before any training. One that does not is removed."""
    needed = storage.variables_bytes(model)  # before the optimizer has its state: a lower bound
    try:
        run_path = rd.create_run_dir(config.log_dir, config.model)
    except storage.WriteFailed as failed:
        raise _storage_error(failed, needed, "Nothing was trained.",
                             "run it again, or choose another `log_dir`.", at_least=True) from None
    try:
        with storage.writing("the run folder", run_path):
            stack.enter_context(rd.RunLock(run_path))
            write_config(config, os.path.join(run_path, rd.CONFIG))
            rd.write_json(os.path.join(run_path, rd.STATE), state)
            storage.check_free_space("a checkpoint", run_path, needed)
    except storage.WriteFailed as failed:
        shutil.rmtree(run_path, ignore_errors=True)
        raise _storage_error(failed, needed, "Nothing was trained.",
                             "run it again, or choose another `log_dir`.", at_least=True) from None
    return run_path


def _prepare_resumed_folder(config, run_path, state, model):
    """Finishes the last commit (a run stopped by a full disk may have been stopped within it), saves
    a changed config, and checks that the folder takes writes and, with epochs left, has room for a
    checkpoint."""
    needed = storage.checkpoint_bytes(model, run_path, state)
    try:
        with storage.writing("the run folder", run_path):
            finish_commit(run_path, state)
            if build_config(read_config_file(os.path.join(run_path, rd.CONFIG))) != config:
                write_config(config, os.path.join(run_path, rd.CONFIG))
            if state["completed_epochs"] < config.epochs:
                storage.check_free_space("a checkpoint", run_path, needed)
    except storage.WriteFailed as failed:
        raise _storage_error(failed, needed, f"Nothing was trained; {_kept(state, config)}",
                             f"resume with: `fit(resume_path={run_path!r})`",
                             at_least=not state.get("checkpoint")) from None


def _kept(state, config):
    if not state.get("checkpoint"):
        return "no epoch had been committed."
    return f"the last committed epoch ({state['completed_epochs']} of {config.epochs}) is kept there."


def _storage_error(failed, needed, outcome, then, at_least=False):
    return StorageError(storage.explain(failed, needed, outcome, then, at_least=at_least))


def _train(config, data, model, run_path, state, train_loader, eval_loader, device, verbose, echo, started):
    import torch

    group = distributed.current()
    clock = TrainingClock(state, config.target_accuracy, config.stop_at_target)
    callbacks, nan_guard = make_callbacks(config, run_path, state, train_loader, eval_is_test=data.val is None,
                                          clock=clock)
    prepare_s = time.perf_counter() - started
    initial_epoch = state["completed_epochs"]
    if initial_epoch < config.epochs:
        try:
            model.fit(
                train_loader.as_keras_input(),
                validation_data=eval_loader.as_keras_input(),
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                callbacks=RunCallbacks(callbacks, model=model, epochs=config.epochs, steps=len(train_loader),
                                       verbose=verbose),
                verbose=verbose,
                shuffle=False,  # the loader shuffles
            )
        except torch.OutOfMemoryError:
            raise TrainingError(
                f"Out of {device} memory at batch size {config.batch_size}. Lower `batch_size` (a new run), "
                f"or free the device and resume with: `fit(resume_path={run_path!r})`"
            ) from None
        except storage.WriteFailed as failed:
            raise _storage_error(failed, storage.checkpoint_bytes(model, run_path, state),
                                 f"Training stopped; {_kept(state, config)}",
                                 f"resume with: `fit(resume_path={run_path!r})`") from None
        except KeyboardInterrupt:
            raise Interrupted(
                f"Interrupted. The last completed epoch ({state['completed_epochs']} of {config.epochs}) is "
                f"saved in {run_path}. Resume with: `fit(resume_path={run_path!r})`"
            ) from None
        finally:
            restore_gradients(model)
    if group.distributed:  # rank 0's Checkpointer kept the record
        state = group.broadcast(state)
    if nan_guard.bad_step is not None:
        epoch, step = nan_guard.bad_step
        where = f"epoch {epoch}, step {step}" if step else f"epoch {epoch}"
        kept = (f"the last good checkpoint (epoch {state['completed_epochs']}) is kept in {run_path}"
                if state["checkpoint"] else f"no epoch had completed, so {run_path} holds no checkpoint")
        raise TrainingError(
            f"The training loss became NaN or infinite at {where}; training stopped and {kept}. "
            "Lower the learning rate (`lr`), or use `schedule='cosine'` with warm-up (`warmup_epochs`)."
        )
    try:
        tta = None
        if config.tta:
            tta_started = time.perf_counter()
            logits, plain = predict_logits_tta(model, data.eval, config.eval_batch_size, with_plain=True)
            tta = {"time_s": time.perf_counter() - tta_started,
                   "plain_accuracy": float((plain.argmax(-1) == data.eval.labels).mean())}
        else:
            logits = predict_logits(model, data.eval, config.eval_batch_size)
    except torch.OutOfMemoryError:
        raise TrainingError(
            f"Out of {device} memory in the final evaluation at eval batch size {config.eval_batch_size}; the "
            f"trained epochs are saved in {run_path}. Finish with a smaller `eval_batch_size`: "
            f"`fit(resume_path={run_path!r})`"
        ) from None
    report = classification_report(data.eval.labels, logits, data.class_names)
    timing = _timing(config, state, report, clock, prepare_s, tta)
    summary = _summary(config, state, report, data, device, run_path)
    summary.update(timing, steps_per_epoch=len(train_loader),
                   train_images_per_epoch=train_loader.images_per_epoch * group.world_size)
    if group.is_main:
        try:
            with storage.writing("the final summary", run_path):
                rd.write_json(os.path.join(run_path, rd.SUMMARY), summary)
                if config.tensorboard:
                    write_final_summaries(run_path, config, report, summary, step=state["completed_epochs"] - 1)
        except storage.WriteFailed as failed:
            raise _storage_error(failed, storage.checkpoint_bytes(model, run_path, state),
                                 f"All {state['completed_epochs']} epochs are saved there; only the summary "
                                 "is missing.", f"write it with: `fit(resume_path={run_path!r})`") from None
    best = state.get("best")
    if best:
        echo(f"Best {data.eval_split_name} accuracy {100 * best['value']:.2f}% (epoch {best['epoch']}); "
             f"final {100 * report['accuracy']:.2f}%" + (" with test-time augmentation "
             f"({100 * tta['plain_accuracy']:.2f}% without)." if tta else "."))
    if timing["target"] is not None:
        echo(_target_line(timing))
    echo(f"Checkpoints and logs: {run_path}")
    echo(f"Total time: {_format_duration(time.perf_counter() - started)}")
    return FitResult(run_path, summary, state["history"])


def _timing(config, state, report, clock, prepare_s, tta):
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


def _target_line(timing):
    target = timing["target"]
    if not target["reached"]:
        return f"Target accuracy {100 * target['accuracy']:.2f}% not reached."
    how = "with the final test-time augmentation" if target["with_tta"] else f"at epoch {target['epoch']}"
    first = f"; first step {timing['first_step_s']:.1f} s" if timing["first_step_s"] is not None else ""
    return (f"Reached {100 * target['accuracy']:.2f}% ({100 * target['value']:.2f}%) {how} after "
            f"{_format_duration(target['elapsed_s'])} of training (from the first step{first}, graph capture "
            f"included; {timing['prepare_s']:.1f} s of data and model preparation before it).")


def _summary(config, state, report, data, device, run_path):
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
