"""Config files, flags and their precedence; the one schema of settings."""

import re

import pytest
import yaml

from keras_cifar.errors import ConfigError
from keras_cifar.models import list_models
from keras_cifar.train.config import (
    FIELDS,
    RunConfig,
    configs_dir,
    default_config_path,
    read_config_file,
    resolve_config,
    write_config,
)
from tests.conftest import REPO


def test_every_model_has_a_config_with_the_original_hyperparameters():
    expected = {
        "cnn": dict(lr=1e-3, batch_size=32, epochs=20, optimizer="adam"),
        "inception_lite": dict(lr=1e-3, batch_size=16, epochs=20, optimizer="adam"),
        "resnet_lite": dict(lr=1e-3, batch_size=32, epochs=40, optimizer="adam"),
        "googlenet": dict(lr=1e-4, batch_size=32, epochs=20, optimizer="adam"),
        "resnet18": dict(lr=1e-3, batch_size=32, epochs=10, optimizer="sgd", momentum=0.0, weights="imagenet"),
    }
    for model in list_models():
        if model.startswith("airbench"):  # not originals: airbench's recipes (tests/test_airbench_recipe.py)
            continue
        config = resolve_config(None, {"model": model})
        for key, value in expected[model].items():
            assert getattr(config, key) == value, (model, key)
        assert config.augment is False and config.schedule == "constant"
    second = resolve_config(configs_dir() / "resnet18_lr1e-4.yaml")
    assert (second.lr, second.epochs, second.optimizer, second.momentum) == (1e-4, 20, "sgd", 0.0)


def test_every_shipped_config_is_valid():
    files = sorted(configs_dir().glob("*.yaml"))
    assert len(files) >= 6
    for path in files:
        assert resolve_config(path).model in list_models()


def test_precedence_defaults_file_flags(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: resnet_lite\nepochs: 7\nlr: 2e-3\n")
    config = resolve_config(path, {"epochs": 3, "lr": None})
    assert config.model == "resnet_lite"  # from the file
    assert config.epochs == 3  # the flag beats the file
    assert config.lr == 2e-3  # an unset flag leaves the file's value (YAML's "2e-3" read as a number)
    assert config.batch_size == RunConfig.batch_size  # the default where neither says
    assert resolve_config(None, {"model": "cnn", "epochs": 2}).epochs == 2


def test_unknown_keys_are_rejected_with_the_valid_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: cnn\nepoch: 3\n")
    with pytest.raises(ConfigError) as error:
        resolve_config(path)
    message = str(error.value)
    assert "epoch" in message and "Did you mean 'epochs'" in message
    for key in FIELDS:
        assert key in message


@pytest.mark.parametrize("text,match", [
    ("epochs: ten", "`epochs` must be an integer"),
    ("epochs: 0", "`epochs` must be at least 1"),
    ("batch_size: -4", "`batch_size` must be at least 1"),
    ("lr: -0.1", "`lr`"),
    ("val_split: 1.0", "`val_split`"),
    ("optimizer: rmsprop", "`optimizer` must be one of adam, adamw, sgd"),
    ("augment: maybe", "`augment` must be true or false"),
    ("model: resnet_lit", "Did you mean 'resnet_lite'"),
    ("- a\n- list", "must hold a mapping"),
    ("model: [unclosed", "not valid YAML"),
    ("model: cnn\nweights: imagenet", "resnet18 only"),
])
def test_bad_values(text, match, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        resolve_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "none.yaml")


def test_written_config_resolves_to_the_same(tmp_path):
    config = resolve_config(None, {"model": "inception_lite", "epochs": 3, "augment": True})
    write_config(config, tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["epochs"] == 3
    assert resolve_config(tmp_path / "config.yaml") == config


def test_default_config_paths():
    for model in list_models():
        assert default_config_path(model) is not None


# --- one schema: RunConfig's fields are the flags, the validation and the docs table ---------------


def test_fit_flags_are_generated_from_the_schema():
    import click

    from keras_cifar.cli import fit
    from keras_cifar.train.config import CHOICES, base_type, flag_name

    options = {param.name: param for param in fit.params if isinstance(param, click.Option)}
    assert set(options) == set(FIELDS) | {"config_file", "resume_path"}
    for name, field in FIELDS.items():
        option = options[name]
        kind, _ = base_type(name)
        assert option.opts == [flag_name(name)] and option.default is None, name  # unset: the file's value
        assert option.help.endswith(field.metadata["help"]), name
        if kind is bool:
            assert option.secondary_opts == ["--no-" + flag_name(name)[2:]], name
        elif name in CHOICES:
            assert list(option.type.choices) == list(CHOICES[name]), name
        elif field.metadata["min"] is not None:
            assert option.type.min == field.metadata["min"] and option.type.min_open == field.metadata["min_open"]
            assert option.type.max == field.metadata["max"] and option.type.max_open == field.metadata["max_open"]
        elif field.metadata["path"] == "dir":
            assert isinstance(option.type, click.Path) and not option.type.file_okay
    assert "resnet18 only" in options["weights"].help  # from the registry


def test_field_types_come_from_the_annotations():
    from keras_cifar.train.config import TYPES, base_type

    assert base_type("resize_to") == (int, True) and base_type("lr") == (float, False)
    assert base_type("weights") == (str, True) and base_type("augment") == (bool, False)
    assert set(TYPES) == set(FIELDS)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_validation_follows_the_metadata(name):
    """Each declared choice and bound is enforced by the library, with the same words as the docs table."""
    from keras_cifar.train.config import CHOICES, base_type, build_config, range_text

    from keras_cifar.train.config import models_taking

    base = {"model": models_taking(name)[0] if FIELDS[name].metadata["model_specific"] else "cnn"}
    meta = FIELDS[name].metadata
    if meta["help"].startswith(("muon:", "sgd, muon:")):  # settings of one optimizer, refused for the others
        base["optimizer"] = "muon"
    if name in CHOICES:
        for choice in CHOICES[name]:
            assert getattr(build_config({**base, name: choice}), name) == choice
        with pytest.raises(ConfigError, match=f"`{name}` must be one of"):
            build_config({**base, name: "no-such-choice"})
    for bound, is_open, step in ((meta["min"], meta["min_open"], -1), (meta["max"], meta["max_open"], 1)):
        if bound is None:
            continue
        if not is_open:
            assert getattr(build_config({**base, name: bound}), name) == bound
        outside = bound if is_open else bound + step * (1 if base_type(name)[0] is int else 1e-6)
        with pytest.raises(ConfigError, match=f"`{name}`.* must be {re.escape(range_text(name))}"):
            build_config({**base, name: outside})


def test_settings_doc_is_generated_from_the_schema():
    from keras_cifar.train.settings_doc import settings_markdown

    doc = (REPO / "docs" / "SETTINGS.md").read_text()
    assert doc == settings_markdown(), (
        "docs/SETTINGS.md is stale: python -m keras_cifar.train.settings_doc docs/SETTINGS.md")
    for name in FIELDS:
        assert f"| `{name}` |" in doc


def test_resumable_settings_are_declared_in_the_schema():
    from keras_cifar.train.trainer import RESUMABLE_CHANGES

    assert RESUMABLE_CHANGES == {"epochs", "device", "jit", "eval_batch_size", "data", "data_dir", "dist_timeout",
                                 "deterministic", "tta", "target_accuracy", "stop_at_target", "tensorboard"}


# --- model-specific settings: declared by the registry entry -------------------------------------


def test_model_specific_settings_are_declared_by_the_registry():
    import inspect

    from keras_cifar.models import get_model_info
    from keras_cifar.train.config import MODEL_SPECIFIC

    assert set(MODEL_SPECIFIC) == {"resize_to", "weights", "normalize", "whitening", "head",
                                   "whiten_bias_init"}
    declared = set()
    for model in list_models():
        info = get_model_info(model)
        assert set(info.settings) <= set(MODEL_SPECIFIC), model
        accepted = inspect.signature(info.builder).parameters
        # A builder keyword named like a model-specific setting must be declared, or runs could never set it.
        assert {s for s in MODEL_SPECIFIC if s in accepted} == set(info.settings), model
        declared |= set(info.settings)
    assert declared == set(MODEL_SPECIFIC)
    assert get_model_info("resnet18").settings == ("resize_to", "weights")
    assert get_model_info("googlenet").settings == ("resize_to",)
    assert get_model_info("airbench94").settings == ("whitening", "head", "whiten_bias_init")


def test_a_new_model_declares_its_settings_in_one_place(monkeypatch, tmp_path):
    """A model registered with `settings=` is validated and built with them, without any model name
    in config.py or trainer.py."""
    from keras_cifar.models import registry
    from keras_cifar.models.cnn import build_cnn
    from keras_cifar.train.config import build_config, model_options
    from keras_cifar.train.trainer import build_model

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    received = {}

    def build_tiny(num_classes=10, data_format="channels_first", init="torch", resize_to=None, normalize=False):
        received.update(resize_to=resize_to, normalize=normalize)
        return build_cnn(num_classes=num_classes, data_format=data_format, init=init, name="tiny")

    registry.register_model("tiny", input_size="32x32", experiment="-", description="-",
                            settings=("resize_to", "normalize"))(build_tiny)
    config = build_config({"model": "tiny", "resize_to": 48, "normalize": True})
    assert model_options(config) == {"resize_to": 48, "normalize": True}
    build_model(config, 10)
    assert received == {"resize_to": 48, "normalize": True}
    assert model_options(build_config({"model": "tiny"})) == {}  # unset settings keep the builder's defaults
    with pytest.raises(ConfigError, match="`weights` applies to resnet18 only"):
        build_config({"model": "tiny", "weights": "imagenet"})
    with pytest.raises(ConfigError, match="`normalize` applies to cnn, inception_lite, resnet_lite and tiny only"):
        build_config({"model": "googlenet", "normalize": True})
    with pytest.raises(ValueError, match="does not take"):
        registry.register_model("broken", input_size="-", experiment="-", description="-",
                                settings=("weights",))(build_tiny)


def test_model_settings_reach_the_builder():
    from keras_cifar.train.trainer import build_model

    model = build_model(resolve_config(None, {"model": "googlenet", "resize_to": 64}), 10)
    resize = [layer for layer in model.layers if "resiz" in layer.name]
    assert resize and any(64 in tuple(layer.output.shape) for layer in resize)
    with pytest.raises(ConfigError, match="`resize_to` applies to googlenet and resnet18 only"):
        resolve_config(None, {"model": "cnn", "resize_to": 64})


# --- configs ship with the package; a model without one is an error ------------------------------


def test_configs_are_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert configs_dir().is_absolute() and (configs_dir() / "cnn.yaml").is_file()
    assert resolve_config(None, {"model": "resnet18"}).optimizer == "sgd"


def test_a_model_without_a_config_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_CIFAR_CONFIGS", str(tmp_path))
    assert default_config_path("cnn") is None
    with pytest.raises(ConfigError, match=r"The model 'cnn' has no config: .*cnn\.yaml' does not exist"):
        resolve_config(None, {"model": "cnn"})
    (tmp_path / "cnn.yaml").write_text("model: cnn\nepochs: 3\n")
    assert resolve_config(None, {"model": "cnn"}).epochs == 3


@pytest.mark.parametrize("old, new", [("fast", "airbench94"), ("fast_muon", "airbench94_muon"), ("fast95", "airbench95")])
def test_an_old_model_name_is_refused_with_the_new_one(old, new):
    import keras_cifar as kc
    from keras_cifar.errors import UsageError

    with pytest.raises(ConfigError, match=f"{old!r} is now called {new!r}"):
        resolve_config(None, {"model": old})
    with pytest.raises(UsageError, match=f"now called {new!r}"):
        kc.create_model(old)
    assert resolve_config(None, {"model": new}).model == new


def test_optimizer_rules_are_checked_apart_from_the_schema():
    from keras_cifar.train.config import build_config
    from keras_cifar.optim.settings import check_optimizer_settings

    check_optimizer_settings(RunConfig(optimizer="muon", muon_lr=0.1, head_lr_scale=2.0))
    for values, message in [
        (dict(optimizer="adam", lookahead=5), "`lookahead` applies to optimizer sgd only. Received: "
                                              "`optimizer='adam'`, `lookahead=5`"),
        (dict(optimizer="adamw", bn_bias_lr_scale=64.0), "`bn_bias_lr_scale` and `head_lr_scale` apply to "
                                                         "optimizers sgd and muon only."),
        (dict(optimizer="sgd", muon_momentum=0.5), "`muon_lr` and `muon_momentum` apply to optimizer muon only. "
                                                   "Received: `optimizer='sgd'`, `muon_momentum=0.5`"),
        (dict(optimizer="muon", mixed_precision="fp16"), "optimizer muon does not take fp16's loss scaling"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_optimizer_settings(RunConfig(**values))
        with pytest.raises(ConfigError, match=re.escape(message)):
            build_config({"model": "cnn", **values})


@pytest.mark.parametrize("retired", ["trace", "trace-fused"])
def test_a_run_folder_saved_with_torchscript_capture_resumes_on_the_new_one(retired, tmp_path, capsys,
                                                                             monkeypatch):
    """`jit: trace` and `trace-fused` (TorchScript, retired) in a saved config.yaml read as
    `jit: graph`, with a note printed once; a new command line takes the new values only."""
    from keras_cifar.train import config as config_module
    from keras_cifar.train.config import build_config, read_config_file, resolve_config, write_config

    monkeypatch.setattr(config_module, "_retired_noted", set())
    path = tmp_path / "config.yaml"
    write_config(resolve_config(None, {"model": "cnn"}), str(path))
    path.write_text(path.read_text().replace("jit: graph", f"jit: {retired}"))
    assert f"jit: {retired}" in path.read_text()
    for _ in range(2):
        assert build_config(read_config_file(str(path))) == resolve_config(None, {"model": "cnn"})
    notes = capsys.readouterr().err
    assert notes.count(f"Note: `jit: {retired}` is retired") == 1 and "running with `jit: graph`" in notes
