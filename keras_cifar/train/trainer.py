"""`fit`: trains a model with Keras `fit` into a run folder, resumable; data-parallel under torchrun
(`keras_cifar.train.distributed`: rank 0 owns the run folder, every rank trains)."""

import contextlib
import dataclasses
import os
import time

import keras

from keras_cifar import _backend, tensorflow_cpu
from keras_cifar.data import TensorLoader, load_cifar
from keras_cifar.data.augment import Augmentation
from keras_cifar.errors import KerasCifarError, TrainingError, UsageError
from keras_cifar.losses import build_loss
from keras_cifar.models import create_model
from keras_cifar.train import distributed, storage
from keras_cifar.train import run_dir as rd
from keras_cifar.optim import build_optimizer
from keras_cifar.train.callbacks import EpochSeeder, EpochStats, NaNGuard, RunCallbacks, RunTimes, TrainingClock
from keras_cifar.train.checkpoints import (check_compatible, check_optimizer_restored, load_checkpoint,
                                          load_optimizer_state)
from keras_cifar.train.commit import Checkpointer
from keras_cifar.train.config import model_options
from keras_cifar.train.device import describe_device, seed_everything, select_device, set_precision
from keras_cifar.train.evaluation import classification_report, predict_logits, predict_logits_tta
from keras_cifar.train.freeze import WhiteningBiasFreeze
from keras_cifar.train.reports import format_duration, summary_of, target_line, timing_of, write_final_summaries
from keras_cifar.train.run_folder import (RESUMABLE_CHANGES, kept, new_run_folder, new_run_state,  # noqa: F401
                                          prepare_resumed_folder, resumed_config, storage_error)
from keras_cifar.train.tensorboard_callbacks import EpochTensorBoard, OriginalTags


class Interrupted(KerasCifarError):
    exit_code = 130


@dataclasses.dataclass
class FitResult:
    run_path: str
    summary: dict
    history: list


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


def make_callbacks(config, run_path, state, train_loader, eval_is_test, clock=None, times=None):
    """The callbacks of every `fit` run (the benchmarks use the same). Order matters: the
    seeder first; epoch stats before anything reads the logs; the clock before the writers (what
    runs after its `on_epoch_end` is off the time-to-accuracy clock); the checkpoint is committed
    before the logs are written, so a crash can lose a log line but never a checkpoint. `times`:
    the RunTimes that the checkpoint's details are timed into (give the same to RunCallbacks).

    In a data-parallel run every rank keeps the callbacks that act on training (the seeder, with
    its rank; the NaN guard, reduced over the ranks at the same steps) and only rank 0 writes."""
    group = distributed.current()
    if group.distributed:
        nan_guard = NaNGuard(check_steps=distributed.NAN_CHECK_STEPS, all_ranks=group.first_over_ranks)
    else:
        nan_guard = NaNGuard()
    callbacks = [
        WhiteningBiasFreeze(),
        EpochSeeder(config.seed, train_loader, rank=group.rank),
        EpochStats(),
        nan_guard,
    ]
    if clock is not None:
        callbacks.append(clock)
    if group.is_main:
        callbacks.append(Checkpointer(run_path, state, nan_guard, times=times))
        if config.tensorboard:
            callbacks += [OriginalTags(run_path, len(train_loader), eval_is_test=eval_is_test),
                          EpochTensorBoard(run_path)]
    return callbacks, nan_guard


def time_parts(times, started_at):
    """summary.json's `time_parts_s`, of this process (a resumed run: the epochs it ran): the run's
    phases (`run`: prepare, fit_start, epochs, fit_end, final_evaluation, final_summaries, in seconds,
    in the order they ran), each epoch's parts (`epochs`, see RunTimes), and the wall-clock times
    (Unix seconds) at which `fit` began (`started_at`, after the imports) and summary.json was
    written (`written_at`), from which a benchmark that started the process and waited for its exit
    sees the start-up and the exit."""
    return {"run": {name: seconds for name, seconds in times.run.items() if seconds is not None},
            "epochs": times.as_dict()["epochs"], "started_at": started_at, "written_at": time.time()}


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
    started_at = time.time()
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
                    raise storage_error(failed, None, "Nothing was trained.",
                                        f"resume with: `fit(resume_path={run_path!r})`") from None
            state = group.broadcast(rd.read_json(os.path.join(run_path, rd.STATE)) if group.is_main else None)
            checkpoint = os.path.join(run_path, state["checkpoint"]) if state.get("checkpoint") else None
            if checkpoint and group.is_main:
                model = load_checkpoint(checkpoint)
                check_compatible(model, checkpoint, data.num_classes, model_name=config.model)
                compile_model(model, config, steps_per_epoch)  # the factory's optimizer, with the model state
                load_optimizer_state(model, checkpoint)
                check_optimizer_restored(model, checkpoint, state["completed_epochs"])
            else:  # killed before the first epoch ended (start over in the same folder), or not rank 0
                model = new_model(config, data)
                compile_model(model, config, steps_per_epoch)
            if group.is_main:
                prepare_resumed_folder(config, run_path, state, model)
            echo(f"Resuming {run_path} after epoch {state['completed_epochs']} of {config.epochs}")
        else:
            model = new_model(config, data)
            compile_model(model, config, steps_per_epoch)
            state = new_run_state(data.class_names)
            run_path = new_run_folder(config, state, model, stack) if group.is_main else None
            run_path = group.broadcast(run_path)  # one run folder, rank 0's
        model.set_graph_capture(config.jit in ("graph", "graph-compiled"), compiled=config.jit == "graph-compiled")
        distributed.prepare(model, config, group, echo, averaged_state=model.optimizer.model_state_averages)
        echo(f"Model: {config.model}, {model.count_params():,} parameters; run folder: {run_path}")
        return _train(config, data, model, run_path, state, train_loader, eval_loader, device, verbose, echo,
                      started, started_at)


def _train(config, data, model, run_path, state, train_loader, eval_loader, device, verbose, echo, started,
           started_at):
    import torch

    group = distributed.current()
    clock = TrainingClock(state, config.target_accuracy, config.stop_at_target)
    times = RunTimes()
    callbacks, nan_guard = make_callbacks(config, run_path, state, train_loader, eval_is_test=data.val is None,
                                          clock=clock, times=times)
    prepare_s = time.perf_counter() - started
    times.run["prepare"] = prepare_s
    initial_epoch = state["completed_epochs"]
    if initial_epoch < config.epochs:
        try:
            times.mark("fit")
            model.fit(
                train_loader.as_keras_input(),
                validation_data=eval_loader.as_keras_input(),
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                callbacks=RunCallbacks(callbacks, model=model, epochs=config.epochs, steps=len(train_loader),
                                       verbose=verbose, times=times),
                verbose=verbose,
                shuffle=False,  # the loader shuffles
            )
            times.mark("fit_returned")
        except torch.OutOfMemoryError:
            raise TrainingError(
                f"Out of {device} memory at batch size {config.batch_size}. Lower `batch_size` (a new run), "
                f"or free the device and resume with: `fit(resume_path={run_path!r})`"
            ) from None
        except storage.WriteFailed as failed:
            raise storage_error(failed, storage.checkpoint_bytes(model, run_path, state),
                                f"Training stopped; {kept(state, config)}",
                                f"resume with: `fit(resume_path={run_path!r})`") from None
        except KeyboardInterrupt:
            raise Interrupted(
                f"Interrupted. The last completed epoch ({state['completed_epochs']} of {config.epochs}) is "
                f"saved in {run_path}. Resume with: `fit(resume_path={run_path!r})`"
            ) from None
    if group.distributed:  # rank 0's Checkpointer kept the record
        state = group.broadcast(state)
    if nan_guard.bad_step is not None:
        epoch, step = nan_guard.bad_step
        where = f"epoch {epoch}, step {step}" if step else f"epoch {epoch}"
        what_is_kept = (f"the last good checkpoint (epoch {state['completed_epochs']}) is kept in {run_path}"
                        if state["checkpoint"] else f"no epoch had completed, so {run_path} holds no checkpoint")
        raise TrainingError(
            f"The training loss became NaN or infinite at {where}; training stopped and {what_is_kept}. "
            "Lower the learning rate (`lr`), or use `schedule='cosine'` with warm-up (`warmup_epochs`)."
        )
    times.run["fit_start"] = times.between("fit", "first_epoch_begin")  # Keras's set-up, train-begin hooks
    times.run["epochs"] = sum(epoch["cycle"] for epoch in times.epochs if "cycle" in epoch)
    times.run["fit_end"] = times.between("train_end", "fit_returned")  # train-end hooks (TensorBoard's close)
    times.mark("final_evaluation")
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
    times.run["final_evaluation"] = time.perf_counter() - times.marks["final_evaluation"]
    timing = timing_of(config, state, report, clock, prepare_s, tta)
    summary = summary_of(config, state, report, data, device, run_path)
    summary.update(timing, steps_per_epoch=len(train_loader),
                   train_images_per_epoch=train_loader.images_per_epoch * group.world_size)
    if group.is_main:
        try:
            with storage.writing("the final summary", run_path):
                if config.tensorboard:
                    with times.timed("final_summaries"):
                        write_final_summaries(run_path, config, report, summary, step=state["completed_epochs"] - 1)
                # summary.json last, so that it holds the time of everything before it
                summary["time_parts_s"] = time_parts(times, started_at)
                rd.write_json(os.path.join(run_path, rd.SUMMARY), summary)
        except storage.WriteFailed as failed:
            raise storage_error(failed, storage.checkpoint_bytes(model, run_path, state),
                                f"All {state['completed_epochs']} epochs are saved there; only the summary "
                                "is missing.", f"write it with: `fit(resume_path={run_path!r})`") from None
    best = state.get("best")
    if best:
        echo(f"Best {data.eval_split_name} accuracy {100 * best['value']:.2f}% (epoch {best['epoch']}); "
             f"final {100 * report['accuracy']:.2f}%" + (" with test-time augmentation "
             f"({100 * tta['plain_accuracy']:.2f}% without)." if tta else "."))
    if timing["target"] is not None:
        echo(target_line(timing))
    echo(f"Checkpoints and logs: {run_path}")
    echo(f"Total time: {format_duration(time.perf_counter() - started)}")
    return FitResult(run_path, summary, state["history"])
