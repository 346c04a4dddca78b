"""The command line: `python cli.py fit | evaluate | predict | export | models | tensorboard | plot`.

`fit` is here; the commands on trained runs are `cli_commands.py`'s, how a command ends on an
error `cli_errors.py`'s."""

import os
import sys

import click

from keras_cifar.cli_commands import COMMANDS, DEFAULT_LOG_DIR
from keras_cifar.cli_errors import handle_errors
from keras_cifar.errors import UsageError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli():
    """keras-cifar: the classic CIFAR-10 experiments (CNN, Inception, ResNet, GoogLeNet,
    ResNet18) as Keras 3 models on PyTorch.

    \b
    Typical use:
      python cli.py fit --model resnet_lite --epochs 40
      python cli.py evaluate
      python cli.py tensorboard
    """


# --- fit ------------------------------------------------------------------------------------------


def _setting_option(name):
    """The `fit` flag of RunConfig field `name`, from its annotation and metadata. No default: an
    unset flag leaves the config file's value."""
    from keras_cifar.train.config import FIELDS, base_type, flag_name, models_taking

    meta = FIELDS[name].metadata
    kind = base_type(name)[0]
    flag = flag_name(name)
    help_text = meta["help"]
    if meta["model_specific"]:
        help_text = f"{'/'.join(models_taking(name))} only. {help_text}"
    if kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
    if meta["choices"]:
        param_type = click.Choice(list(meta["choices"]))
    elif meta["pattern"]:
        return click.option(flag, name, type=click.STRING, default=None, metavar=meta["pattern"][1].upper()
                            .replace(", ", "|").replace(" OR ", "|"), help=help_text)
    elif meta["path"] == "dir":
        param_type = click.Path(file_okay=False)
    elif kind in (int, float) and (meta["min"] is not None or meta["max"] is not None):
        ranged = click.IntRange if kind is int else click.FloatRange
        param_type = ranged(meta["min"], meta["max"], min_open=meta["min_open"], max_open=meta["max_open"])
    else:
        param_type = {int: click.INT, float: click.FLOAT, str: click.STRING}[kind]
    return click.option(flag, name, type=param_type, default=None, help=help_text)


def _fit_options(function):
    """Every RunConfig field as a flag (in the schema's order), plus --config and --resume."""
    from keras_cifar.train.config import FIELDS

    options = [_setting_option(name) for name in FIELDS]
    options.insert(1, click.option("--config", "config_file", type=click.Path(dir_okay=False),
                                   help="YAML config file to start from (instead of the model's config)."))
    options.append(click.option(
        "--resume", "resume_path", is_flag=False, flag_value="latest", default=None, metavar="[RUN_DIR]",
        help="Continue a run from its last completed epoch: RUN_DIR, or with no value the latest run (of --model "
             "if given) under --log-dir."))
    for option in reversed(options):
        function = option(function)
    return function


@cli.command()
@_fit_options
@handle_errors
def fit(config_file, resume_path, **flags):
    """Train a model with Keras `fit`, logging to TensorBoard and saving checkpoints.

    Settings come from the model's config in configs/ (or --config FILE); flags override them.
    Each run gets a folder logs/<model>-<time> with the resolved config, TensorBoard logs,
    best.keras, last.keras, metrics.csv and summary.json.
    """
    from keras_cifar.train import run_dir as rd
    from keras_cifar.train.config import resolve_config
    from keras_cifar.train.trainer import fit as run_fit
    from keras_cifar.train.trainer import resumed_config

    resume = resume_path
    if resume is None:
        config = resolve_config(config_file, flags)
        run_fit(config, verbose=_verbosity())
        return
    log_dir = flags.get("log_dir") or DEFAULT_LOG_DIR
    if resume == "latest":
        model = flags.get("model")
        if model is None and config_file:
            model = resolve_config(config_file, {}).model
        runs = [r for r in rd.list_runs(log_dir, model) if os.path.exists(os.path.join(r, rd.STATE))]
        if not runs:
            raise UsageError(f"--resume: no run{' of ' + repr(model) if model else ''} to resume under "
                             f"{log_dir!r}. Pass the run folder: --resume RUN_DIR.")
        resume = runs[-1]
    if config_file:
        raise UsageError("--resume continues a run with its own saved config; do not pass --config with it.")
    config = resumed_config(resume, flags)
    run_fit(config, resume_path=resume, verbose=_verbosity())


def _verbosity():
    """A live progress bar on a terminal, one line per epoch in a log file."""
    return 1 if sys.stdout.isatty() else 2


for _command in COMMANDS:
    cli.add_command(_command)


def main():
    cli()  # click names the program as typed: cli.py, keras-cifar or python -m keras_cifar.cli


if __name__ == "__main__":
    main()
