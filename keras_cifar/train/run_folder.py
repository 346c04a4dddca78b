"""The run folder of `fit`: a new one made and checked before training, a resumed one finished
and checked, and the config a resume continues with."""

import os
import shutil

from keras_cifar.errors import CheckpointError, ConfigError, StorageError
from keras_cifar.train import run_dir as rd
from keras_cifar.train import storage
from keras_cifar.train.commit import finish_commit
from keras_cifar.train.config import (RESUMABLE, build_config, check_keys, coerce, read_config_file, to_dict,
                                      write_config)

# Keys a resumed run may change (declared `resumable` in RunConfig); the rest define the run and must stay.
RESUMABLE_CHANGES = RESUMABLE


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


def new_run_state(class_names=()):
    return {"completed_epochs": 0, "checkpoint": None, "best": None, "history": [], "class_names": list(class_names)}


def new_run_folder(config, state, model, stack):
    """A new run folder with its config and first state, which also shows that the log folder takes
    writes and has room for a checkpoint, before any training. One that does not is removed."""
    needed = storage.variables_bytes(model)  # before the optimizer has its state: a lower bound
    try:
        run_path = rd.create_run_dir(config.log_dir, config.model)
    except storage.WriteFailed as failed:
        raise storage_error(failed, needed, "Nothing was trained.",
                            "run it again, or choose another `log_dir`.", at_least=True) from None
    try:
        with storage.writing("the run folder", run_path):
            stack.enter_context(rd.RunLock(run_path))
            write_config(config, os.path.join(run_path, rd.CONFIG))
            rd.write_json(os.path.join(run_path, rd.STATE), state)
            storage.check_free_space("a checkpoint", run_path, needed)
    except storage.WriteFailed as failed:
        shutil.rmtree(run_path, ignore_errors=True)
        raise storage_error(failed, needed, "Nothing was trained.",
                            "run it again, or choose another `log_dir`.", at_least=True) from None
    return run_path


def prepare_resumed_folder(config, run_path, state, model):
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
        raise storage_error(failed, needed, f"Nothing was trained; {kept(state, config)}",
                            f"resume with: `fit(resume_path={run_path!r})`",
                             at_least=not state.get("checkpoint")) from None


def kept(state, config):
    if not state.get("checkpoint"):
        return "no epoch had been committed."
    return f"the last committed epoch ({state['completed_epochs']} of {config.epochs}) is kept there."


def storage_error(failed, needed, outcome, then, at_least=False):
    return StorageError(storage.explain(failed, needed, outcome, then, at_least=at_least))
