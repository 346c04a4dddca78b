"""Config files, flags and their precedence."""

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


def test_every_model_has_a_config_with_the_original_hyperparameters():
    expected = {
        "cnn": dict(lr=1e-3, batch_size=32, epochs=20, optimizer="adam"),
        "inception_lite": dict(lr=1e-3, batch_size=16, epochs=20, optimizer="adam"),
        "resnet_lite": dict(lr=1e-3, batch_size=32, epochs=40, optimizer="adam"),
        "googlenet": dict(lr=1e-4, batch_size=32, epochs=20, optimizer="adam"),
        "resnet18": dict(lr=1e-3, batch_size=32, epochs=10, optimizer="sgd", momentum=0.0, weights="imagenet"),
    }
    for model in list_models():
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
