"""How the command line ends on an error: one paragraph with the command's flags and program name,
an exit code, never a traceback."""

import functools
import sys

import click

from keras_cifar.errors import ConfigError, KerasCifarError, render


def handle_errors(command):
    """User errors end in one paragraph and an exit code, never a traceback. Their messages
    name library parameters; they are shown with this command's flags and program name."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KerasCifarError as error:
            click.echo(f"Error: {for_cli(error, click.get_current_context())}", err=True)
            sys.exit(error.exit_code)
        except Exception as error:
            if not _out_of_memory(error):
                raise
            device = "GPU" if "CUDA" in str(error) else "device"
            click.echo(f"Error: out of {device} memory. Lower --batch-size, or free the device (another "
                       "process may hold it), and run the command again.", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)

    return wrapper


def _out_of_memory(error):
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(error, torch.OutOfMemoryError)


def program(ctx):
    """How the user started the program: `python cli.py`, `keras-cifar` or `python -m keras_cifar.cli`."""
    name = ctx.find_root().info_name or "keras-cifar"
    return f"python {name}" if name.endswith(".py") else name


def _options(command):
    return {param.name: param for param in command.params if isinstance(param, click.Option)}


def _flag_setting(option, value):
    """`--name value` as the user would type it."""
    import shlex

    if option.is_flag and option.secondary_opts and isinstance(value, bool):
        return option.opts[0] if value else option.secondary_opts[0]
    if option.is_flag and isinstance(value, bool):
        return option.opts[0] if value else None
    return f"{option.opts[0]} {'none' if value is None else shlex.quote(str(value))}"


def for_cli(error, ctx):
    """The message of `error` with this command's flags for the parameters it names, and commands
    as the user would type them. A config error about a setting that did not come from the command
    line (but from a config file or a run's saved config) keeps the setting's key."""
    from keras_cifar.train.config import FIELDS

    options = _options(ctx.command)

    def flag(name):
        option = options.get(name)
        if option is None:
            return None
        if (isinstance(error, ConfigError) and name in FIELDS
                and ctx.get_parameter_source(name) != click.core.ParameterSource.COMMANDLINE):
            return None  # a key of a config file: keep it
        return option

    def parameter(name):
        option = flag(name)
        return option.opts[0] if option is not None else None

    def setting(name, value):
        option = flag(name)
        return _flag_setting(option, value) if option is not None else None

    def command(name, arguments):
        from keras_cifar.cli import cli

        subcommand = cli.commands.get(name)
        if subcommand is None:
            return None
        parts = [program(ctx), name]
        sub_options = _options(subcommand)
        for key, value in arguments.items():
            if key not in sub_options:
                return None
            parts.append(_flag_setting(sub_options[key], value) or "")
        return " ".join(part for part in parts if part)

    return render(str(error), parameter, setting, command)
