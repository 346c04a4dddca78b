"""pytorch_reference/airbench_torch.py, the plain-PyTorch airbench94 reference: one short run in-process,
its whitening init, and how it counts the time to an accuracy."""

import importlib
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from keras_cifar.data import CifarData, Split


@pytest.fixture(scope="module")
def airbench():
    return importlib.import_module("pytorch_reference.airbench_torch")


def synthetic_data(train, test, seed=0):
    rng = np.random.default_rng(seed)

    def split(count):
        labels = rng.integers(0, 10, count).astype(np.int64)
        # Class-dependent brightness, so a few steps can learn something.
        images = rng.integers(0, 128, (count, 32, 32, 3)) + 12 * labels[:, None, None, None]
        return Split(images.astype(np.uint8), labels)

    return CifarData(split(train), split(test), tuple(str(i) for i in range(10)), "synthetic")


def short_run(program, out, epochs, extra=()):
    """`program.main` in-process for `epochs` at batch 64 on 320 synthetic images; -> (report, log lines)."""
    lines = []
    threads = torch.get_num_threads()
    try:
        report = program.main(["--device", "cpu", "--threads", str(threads), "--epochs", str(epochs),
                               "--batch-size", "64", "--precision", "fp32", "--out", str(out), *extra],
                              data=synthetic_data(320, 100), log=lines.append)
    finally:
        torch.set_num_threads(threads)
    return report, lines


def test_one_short_epoch_writes_the_report(airbench, tmp_path):
    out = tmp_path / "airbench.json"
    report, lines = short_run(airbench, out, 1)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(report))
    for key in ("config", "machine", "whiten_init_s", "epochs", "tta_acc", "tta_time_s", "total_time_s",
                "time_to_90", "time_to_94", "finished"):
        assert key in written
    assert written["finished"] is True
    assert written["config"]["total_train_steps"] == 5 and written["config"]["hyp"]["opt"]["lr"] == 11.5
    assert {"processor", "torch", "threads", "device"} <= set(written["machine"])
    (row,) = written["epochs"]
    assert set(row) >= {"epoch", "train_time_s", "cumulative_train_s", "test_acc"}
    assert row["steps"] == 5
    assert row["cumulative_train_s"] == pytest.approx(written["whiten_init_s"] + row["train_time_s"])
    assert written["total_time_s"] == pytest.approx(row["cumulative_train_s"] + written["tta_time_s"])
    assert 0 <= row["test_acc"] <= 1 and math.isfinite(written["tta_acc"]) and 0 <= written["tta_acc"] <= 1
    assert any("TTA" in line for line in lines)


def test_airbench95_variant_runs_its_hyp_and_restores_airbench94s(airbench, tmp_path):
    report, lines = short_run(airbench, tmp_path / "airbench95.json", 1, extra=("--variant", "airbench95"))
    hyp = report["config"]["hyp"]
    assert report["config"]["variant"] == "airbench95" and report["finished"] is True
    assert hyp["opt"]["lr"] == 10.0 and hyp["opt"]["train_epochs"] == 15
    assert hyp["net"]["widths"] == {"block1": 128, "block2": 384, "block3": 384}
    assert hyp["opt"]["weight_decay"] == 0.0153 and hyp["aug"]["translate"] == 2  # airbench94's, unchanged
    assert lines[0].startswith("airbench95 on cpu")
    with airbench.variant("airbench95"):
        net = airbench.make_net(torch.device("cpu"), "fp32", torch.contiguous_format)
    assert [net[i].conv2.out_channels for i in (2, 3, 4)] == [128, 384, 384]
    assert airbench.hyp["opt"]["lr"] == 11.5 and airbench.hyp["net"]["widths"]["block1"] == 64
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == 4_604_440


def test_whitening_init_whitens_patches(airbench):
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(64, 3, 12, 12, generator=generator)
    mix = torch.tensor([[1.0, 0.8, 0.3], [0.2, 1.0, 0.7], [0.5, 0.1, 1.0]])
    x = torch.einsum("dc,nchw->ndhw", mix, z)
    x = 2.0 * x + 1.5 * x.roll(1, -1) + 0.8 * x.roll(1, -2) + 0.5  # correlated in space and channels, off-centre
    layer = airbench.Conv(3, 24, kernel_size=2, padding=0, bias=True)

    def second_moment(weight):
        out = F.conv2d(x, weight).permute(0, 2, 3, 1).reshape(-1, weight.shape[0])
        return out.T @ out / len(out)

    identity = torch.eye(12)
    before = second_moment(torch.eye(12).reshape(12, 3, 2, 2))  # the raw patches
    assert (before - identity).abs().max() > 1
    airbench.init_whitening_conv(layer, x)
    weight = layer.weight.detach()
    torch.testing.assert_close(second_moment(weight[:12]), identity, atol=1e-3, rtol=0)
    torch.testing.assert_close(weight[12:], -weight[:12])


def test_time_to_counts_tta_only_when_no_epoch_reached(airbench):
    rows = [{"test_acc": 0.85, "cumulative_train_s": 10.0}, {"test_acc": 0.935, "cumulative_train_s": 20.0}]
    assert airbench.time_to(0.90, rows, 0.95, 3.0) == 20.0
    assert airbench.time_to(0.94, rows, 0.941, 3.0) == 23.0
    assert airbench.time_to(0.94, rows, 0.939, 3.0) is None
    assert airbench.time_to(0.94, rows) is None


def test_airbench94_muon_one_short_epoch_writes_the_report(tmp_path):
    """pytorch_reference/airbench_muon_torch.py: airbench94_muon's loop over the same loader and report."""
    muon = importlib.import_module("pytorch_reference.airbench_muon_torch")
    out = tmp_path / "muon.json"
    report, lines = short_run(muon, out, 2)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(report)) and written["finished"] is True
    assert written["config"]["program"] == "airbench94_muon" and written["config"]["total_train_steps"] == 10
    assert [row["steps"] for row in written["epochs"]] == [5, 5]
    assert written["total_time_s"] == pytest.approx(written["epochs"][-1]["cumulative_train_s"] + written["tta_time_s"])
    assert 0 <= written["tta_acc"] <= 1 and any("airbench94_muon" in line for line in lines)


def test_airbench94_muon_whitening_bias_starts_as_nn_conv2d_or_at_zero():
    """airbench94_muon's whitening layer is a plain nn.Conv2d, so its bias starts in
    U(+-1/sqrt(12)); `--whiten-bias zeros` starts it at zero, as airbench94's Conv does."""
    muon = importlib.import_module("pytorch_reference.airbench_muon_torch")
    torch.manual_seed(0)
    bound = 1 / 12 ** 0.5
    biases = torch.cat([muon.new_model("cpu", torch.channels_last, "bf16").whiten.bias.detach() for _ in range(4)])
    assert 0.9 * bound < biases.abs().max() <= bound and (biases != 0).all()
    zeroed = muon.new_model("cpu", torch.channels_last, "bf16", whiten_bias="zeros").whiten.bias
    assert torch.count_nonzero(zeroed) == 0
    args = ab_args(muon, ["--whiten-bias", "zeros"])
    assert args.whiten_bias == "zeros" and ab_args(muon, []).whiten_bias == "uniform"


def ab_args(program, argv):
    from pytorch_reference import airbench_torch

    return airbench_torch.parse_args(argv, program.add_arguments)


def test_airbench94_muon_normalises_and_orthogonalises_the_kernels():
    """Its Muon step leaves every trained kernel at norm sqrt(output channels) before the
    update, and the update of a kernel is the Newton-Schulz image of its (Nesterov) momentum."""
    muon = importlib.import_module("pytorch_reference.airbench_muon_torch")
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(16, 8, 3, 3))
    weight.grad = torch.randn_like(weight)
    before = weight.detach().clone()
    optimizer = muon.Muon([weight], lr=0.1, momentum=0.6, nesterov=True)
    optimizer.step()
    normalised = before * (16 ** 0.5 / before.norm())
    expected_update = muon.zeropower_via_newtonschulz5((weight.grad * 1.6).reshape(16, -1)).view(16, 8, 3, 3)
    torch.testing.assert_close(weight.detach(), normalised - 0.1 * expected_update.float(), rtol=0, atol=1e-6)
