import math
import subprocess
import sys

import pytest
import torch

from overopt.optim import Adam, lambda_schedule


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.GELU(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))


def _train(model, opt, sched, steps=25, g=None):
    g = torch.Generator().manual_seed(1) if g is None else g
    for _ in range(steps):
        x = torch.randn(32, 7, generator=g)
        loss = (model(x) - x[:, :3]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched()


def _groups(model, lr2):
    p = list(model.parameters())
    return [{"params": p[:2]}, {"params": p[2:], "lr": lr2}]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_and_its_schedule_are_torch_optims_bit_for_bit(weight_decay):
    """Two parameter groups with their own lr, a warm-up/cosine schedule, decoupled weight
    decay: every parameter equals torch.optim.AdamW + LambdaLR's after 25 steps, exactly."""
    factor = lambda s: min(1.0, (s + 1) / 5) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, 25) / 25)))
    ours, theirs = _model(), _model()
    opt = Adam(_groups(ours, 3e-3), lr=1e-2, betas=(0.9, 0.95), eps=1e-5, weight_decay=weight_decay)
    _train(ours, opt, lambda_schedule(opt, factor))
    ref = torch.optim.AdamW(_groups(theirs, 3e-3), lr=1e-2, betas=(0.9, 0.95), eps=1e-5, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(ref, factor)
    _train(theirs, ref, sched.step)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref.param_groups]
    assert not torch.equal(ours[0].weight, _model()[0].weight)  # it trained


def test_adam_resumes_from_its_state_dict_as_if_never_stopped(tmp_path):
    """10 steps, a weights-only save and load into a fresh optimiser, 15 more: the parameters
    of 25 uninterrupted steps; a state of other parameters is refused."""
    whole = _model()
    opt = Adam(_groups(whole, 3e-3), lr=1e-2)
    _train(whole, opt, lambda: None, steps=25)

    part, g = _model(), torch.Generator().manual_seed(1)
    opt = Adam(_groups(part, 3e-3), lr=1e-2)
    _train(part, opt, lambda: None, steps=10, g=g)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    opt = Adam(_groups(part, 3e-3), lr=1e-2)
    opt.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    _train(part, opt, lambda: None, steps=15, g=g)  # the data stream continues where it left off
    for a, b in zip(whole.parameters(), part.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="6 parameters in 2 groups, expected 2 in 1"):
        Adam(torch.nn.Linear(3, 1).parameters(), lr=1e-2).load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))


def test_training_imports_no_compiler():
    """A training step with this optimiser leaves torch._dynamo unimported (torch.optim imports it)."""
    code = ("import sys, torch; from overopt.optim import Adam; m = torch.nn.Linear(3, 1); o = Adam(m.parameters(), lr=0.1);"
            "m(torch.ones(2, 3)).sum().backward(); torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0); o.step();"
            "print('torch._dynamo' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
