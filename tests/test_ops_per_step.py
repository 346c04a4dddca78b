"""A training step and an evaluation step launch no more kernels than a tidy PyTorch loop's.

On a GPU the zoo's small networks are bound by kernel launches, so the number of aten ops a step
dispatches is what its speed follows; it is counted here on the CPU (`pytorch_reference/op_count.py`,
the yardsticks and the ops left out described there; `python -m bench.ops_per_step` prints the
table). The counts do not depend on how the forward pass is captured, only on what it runs.
"""

import pytest
import torch

from pytorch_reference import op_count

CASES = [(model, precision) for model in op_count.ZOO + op_count.AIRBENCH for precision in ("none", "bf16")]


@pytest.mark.parametrize("model,precision", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_steps_launch_no_more_kernels_than_the_yardstick(model, precision):
    ours = op_count.keras_cifar_counts(model, precision)
    theirs = op_count.yardstick_counts(model, precision)
    hooks = ours.pop("fit's batch hooks")
    assert set(ours) == set(theirs) == ({"train", "eval", "lookahead"} if model in ("airbench94", "airbench95")
                                        else {"train", "eval"})
    assert hooks.total <= 4, dict(hooks.ops)  # the NaN guard's record: the running mean, its test (2), the count
    for kind in ours:
        differing = {op: (ours[kind].ops[op], theirs[kind].ops[op])
                     for op in set(ours[kind].ops) | set(theirs[kind].ops) if ours[kind].ops[op] != theirs[kind].ops[op]}
        assert ours[kind].total <= theirs[kind].total, (kind, ours[kind].total, theirs[kind].total, differing)


def test_the_counter_counts_kernels_and_leaves_out_views_and_allocations():
    x = torch.ones(4, 3)
    counter = op_count.count_ops(lambda: (x.t()[1:] + 1).sum().item())
    assert dict(counter.ops) == {"add": 1, "sum": 1}  # the transpose, the slice, the read: no kernel
    counter = op_count.count_ops(lambda: x.t().contiguous())
    assert counter.total == 1  # a copy


def test_the_tidy_step_trains():
    """The yardstick is a working loop: its loss falls on a batch it sees again and again."""
    step = op_count.TidyStep("cnn", lr=1e-2)
    images, labels = op_count.random_batch(32)
    losses = []
    for _ in range(30):
        before = step.sums.loss_sum.clone()
        step.train_step(images, labels)
        losses.append(float(step.sums.loss_sum - before))
    assert losses[-1] < losses[0] - 0.1
    assert step.sums.seen == 30 * 32 and 0 < int(step.sums.correct) <= 30 * 32
