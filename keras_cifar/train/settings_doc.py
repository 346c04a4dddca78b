"""The settings table of docs/SETTINGS.md, generated from `RunConfig` and the model registry.

`python -m keras_cifar.train.settings_doc docs/SETTINGS.md` rewrites the file; a test checks it."""

from pathlib import Path

import yaml

from keras_cifar.train.config import FIELDS, base_type, flag_name, format_number, models_taking


def _allowed(name):
    field = FIELDS[name]
    kind, optional = base_type(name)
    parts = []
    if field.metadata["choices"]:
        parts.append(", ".join(f"`{choice}`" for choice in field.metadata["choices"]))
    elif field.metadata["pattern"]:
        parts.append(field.metadata["pattern"][1])
    elif kind is bool:
        parts.append("`true`, `false`")
    else:
        meta = field.metadata
        low, high = meta["min"], meta["max"]
        if low is not None and high is not None:
            low_bracket, high_bracket = "(" if meta["min_open"] else "[", ")" if meta["max_open"] else "]"
            bounds = f" in {low_bracket}{format_number(low)}, {format_number(high)}{high_bracket}"
        elif low is not None:
            bounds = f" {'>' if meta['min_open'] else '>='} {format_number(low)}"
        elif high is not None:
            bounds = f" {'<' if meta['max_open'] else '<='} {format_number(high)}"
        else:
            bounds = ""
        parts.append({int: "integer", float: "number", str: "string"}[kind] + bounds)
    if optional:
        parts.append("unset" + (f" (also {', '.join(repr(w) for w in field.metadata['none_words'])})"
                                if field.metadata["none_words"] else ""))
    return " or ".join(parts)


def settings_markdown():
    """The settings table of docs/SETTINGS.md, generated from RunConfig and the model registry."""
    def cell(text):
        return str(text).replace("|", "\\|")

    lines = [
        "# Settings",
        "",
        "Every setting of a run: a key of the YAML files in `configs/` (and of `--config FILE`), and the",
        "`fit` flag that overrides it. A run starts from its model's config (`configs/<model>.yaml`); the",
        "defaults below fill only keys that a config file leaves out. Model-specific settings apply to the",
        "models listed and are rejected for the others. Resumable settings may change when a run is",
        "resumed (`fit --resume`); the others define the run.",
        "",
        "Generated from `RunConfig` in `keras_cifar/train/run_config.py`, the one place a setting is declared",
        "(`python -m keras_cifar.train.settings_doc docs/SETTINGS.md` rewrites this file; a test checks it).",
        "",
        "| key | flag | values | default | description |",
        "|---|---|---|---|---|",
    ]
    for name, field in FIELDS.items():
        kind = base_type(name)[0]
        flag = f"`{flag_name(name)}`/`--no-{name.replace('_', '-')}`" if kind is bool else f"`{flag_name(name)}`"
        default = "unset" if field.default is None else f"`{yaml.safe_dump(field.default).splitlines()[0]}`"
        notes = []
        if field.metadata["model_specific"]:
            notes.append(f"Only for {', '.join(f'`{m}`' for m in models_taking(name))}.")
        if field.metadata["resumable"]:
            notes.append("Resumable.")
        description = " ".join([field.metadata["help"]] + notes)
        lines.append(f"| `{name}` | {flag} | {cell(_allowed(name))} | {cell(default)} | {cell(description)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    import keras_cifar  # noqa: F401  (registers the models)

    Path(sys.argv[1] if len(sys.argv) > 1 else "docs/SETTINGS.md").write_text(settings_markdown())
