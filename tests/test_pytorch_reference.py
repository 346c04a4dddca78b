"""pytorch_reference/, the PyTorch side of the comparisons: the tidy loop (the speed benchmarks'
yardstick) trains as the originals' loop does, and the Keras port's gradients are PyTorch's."""

import numpy as np
import pytest


@pytest.mark.parametrize("model_name", ["cnn", "resnet_lite"])
def test_keras_gradients_are_pytorch_gradients_up_to_rounding(model_name, real_folder_small, data_dir):
    """One real batch: the Keras port's float32 gradients are as close to PyTorch's float64 ones as
    PyTorch's own float32 gradients are (a few 1e-6). inception_lite is left out: on some batches
    rounding flips a max-pool choice between near-equal values, in PyTorch too (pytorch_reference/gradients.py)."""
    import torch

    from keras_cifar.data import load_cifar

    from pytorch_reference import gradients
    dataset = load_cifar(str(real_folder_small), str(data_dir))
    pick = np.random.default_rng(0).permutation(len(dataset.train.labels))[:32]
    errors = gradients.gradient_errors(model_name, torch.as_tensor(dataset.train.images[pick]),
                                       torch.as_tensor(dataset.train.labels[pick]).long())
    assert errors["torch"] < 2e-5 and errors["torch+ulp"] < 2e-5
    assert 0 < errors["keras"] < 2e-5


def test_tidy_loop_trains_like_the_reference_loop_and_evaluates_every_image(real_folder_small, data_dir):
    """The benchmarks' yardstick takes the same first step as the originals' loop from the same
    weights (whatever its memory format and optimizer implementation), and its evaluation counts
    every test image once."""
    import torch

    from pytorch_reference.torch_loop import ReferenceRun, TidyRun
    from keras_cifar.data import load_cifar

    data = load_cifar(str(real_folder_small), str(data_dir))
    for memory_format, implementation in (("channels_last", "fused"), ("contiguous", "foreach")):
        tidy = TidyRun("cnn", data.train, data.test, 32, memory_format=memory_format, implementation=implementation)
        reference = ReferenceRun("cnn")
        reference.module.load_state_dict(tidy.module.state_dict())
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:32]
        reference.train_step(torch.as_tensor(data.train.images)[order], torch.as_tensor(data.train.labels)[order])
        tidy.train_epoch(max_steps=1)
        for ours, theirs in zip(tidy.module.parameters(), reference.module.parameters()):
            torch.testing.assert_close(ours.detach().contiguous(), theirs.detach(), rtol=1e-4, atol=1e-6)
    loss, accuracy = tidy.evaluate()
    with torch.no_grad():
        tidy.module.eval()
        predictions = tidy.module(tidy.test_x).argmax(1)
    assert accuracy == int((predictions == tidy.test_y).sum()) / len(tidy.test_y)
    assert np.isfinite(loss)
