"""The rules that relate a run's settings to its optimizer: which settings each optimizer takes."""

import dataclasses

from keras_cifar.errors import ConfigError


def check_optimizer_settings(config):
    """Refuses settings that the chosen optimizer would ignore, and muon with fp16."""
    defaults = {field.name: field.default for field in dataclasses.fields(config)}

    def require(condition, message):
        if not condition:
            raise ConfigError(message)

    require(config.optimizer == "sgd" or config.lookahead == 0,
            f"`lookahead` applies to optimizer sgd only. Received: `optimizer={config.optimizer!r}`, "
            f"`lookahead={config.lookahead!r}`")
    require(config.optimizer in ("sgd", "muon") or (config.bn_bias_lr_scale == 1.0 and config.head_lr_scale == 1.0),
            f"`bn_bias_lr_scale` and `head_lr_scale` apply to optimizers sgd and muon only. Received: "
            f"`optimizer={config.optimizer!r}`, `bn_bias_lr_scale={config.bn_bias_lr_scale!r}`, "
            f"`head_lr_scale={config.head_lr_scale!r}`")
    muon_fields = {name: getattr(config, name) for name in ("muon_lr", "muon_momentum")
                   if getattr(config, name) != defaults[name]}
    require(config.optimizer == "muon" or not muon_fields,
            "`muon_lr` and `muon_momentum` apply to optimizer muon only. Received: "
            f"`optimizer={config.optimizer!r}`, " + ", ".join(f"`{k}={v!r}`" for k, v in muon_fields.items()))
    require(config.optimizer != "muon" or config.mixed_precision != "fp16",
            "optimizer muon does not take fp16's loss scaling; use `mixed_precision` bf16 or none. Received: "
            "`optimizer='muon'`, `mixed_precision='fp16'`")
