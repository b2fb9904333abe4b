"""Training checkpoints: plain data only (weights_only), newest kept, per-step generators independent of
history."""

import pickle

import pytest
import torch

from unlearnkit import io
from unlearnkit.erase import checkpoints


class NotPlainData:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    path = tmp_path / "checkpoint-0000001.pt"
    with open(path, "wb") as f:
        pickle.dump({"step": 1, "payload": NotPlainData()}, f, protocol=2)
    with pytest.raises(ValueError, match="cannot be read safely"):
        io.load_checkpoint(path)


def test_save_keeps_the_newest_and_load_restores(tmp_path):
    param = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([param], lr=0.1)
    param.grad = torch.ones(3)
    opt.step()
    for step in (2, 4, 6):
        checkpoints.save(tmp_path, step, {"w": param}, opt, torch.zeros(1, 1, 3), {"lr": 0.1}, [0.5] * step)
    assert [s for s, _ in checkpoints.checkpoints(tmp_path)] == [4, 6]
    saved = param.detach().clone()
    with torch.no_grad():
        param.zero_()
    fresh = torch.optim.Adam([param], lr=0.1)
    state = checkpoints.load(checkpoints.latest(tmp_path), {"w": param}, fresh, {"lr": 0.1})
    assert state["step"] == 6 and torch.equal(param.detach(), saved) and len(state["losses"]) == 6
    assert fresh.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    with pytest.raises(ValueError, match="other settings"):
        checkpoints.load(checkpoints.latest(tmp_path), {"w": param}, fresh, {"lr": 0.2})


def test_step_generators_depend_on_seed_step_and_rank_only():
    draw = lambda *a: torch.rand(4, generator=checkpoints.step_generator(*a)).tolist()  # noqa: E731
    torch.rand(100)  # global RNG use in between changes nothing
    assert draw(0, 5, 0) == draw(0, 5, 0)
    assert len({tuple(draw(*a)) for a in [(0, 5, 0), (0, 6, 0), (0, 5, 1), (1, 5, 0)]}) == 4
