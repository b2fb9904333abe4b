"""unlearnkit/compose/gate_training.py: noising, training, resuming, and the paper's Fig. 1 behaviour."""
import pytest
import torch

from unlearnkit.compose.gate_model import load_gate
from unlearnkit.compose.gate_training import (
    GateTrainConfig,
    check_shard_latents,
    gate_accuracy,
    noised_batch,
    sd_alphas_cumprod,
    train_gate,
)


def two_shards(n=64, seed=0):
    """Two latent sources that differ in structure: left-half vs right-half bright blobs."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 4, 8, 8, generator=g) * 0.3
    b = torch.randn(n, 4, 8, 8, generator=g) * 0.3
    a[:, :, :, :4] += 1.0
    b[:, :, :, 4:] += 1.0
    return {"left": a, "right": b}


def test_sd_schedule_endpoints():
    acp = sd_alphas_cumprod(GateTrainConfig())
    assert acp.shape == (1000,)
    assert abs(float(acp[0]) - 0.99915) < 1e-5 and abs(float(acp[-1]) - 0.00466) < 1e-4  # SD1.x values


def test_noised_batch_is_balanced_and_noised_at_the_right_scale():
    lat = two_shards()
    acp = sd_alphas_cumprod(GateTrainConfig())
    x, sigma, labels = noised_batch([lat["left"], lat["right"]], acp, 512, torch.Generator().manual_seed(0))
    assert 150 < int(labels.sum()) < 360
    assert sigma.min() > 0.02 and sigma.max() > 10
    big = sigma > 5
    assert torch.allclose(x[big].flatten(1).std(1) / sigma[big], torch.ones(int(big.sum())), atol=0.2)


def test_trained_gate_is_sure_at_low_noise_and_uncertain_at_high_noise(tmp_path):
    lat = two_shards()
    net = train_gate(lat, str(tmp_path / "gate.safetensors"), GateTrainConfig(steps=300, batch_size=32))
    held_out = two_shards(seed=1)
    assert gate_accuracy(net, held_out, sigma=0.1) > 0.95
    assert gate_accuracy(net, held_out, sigma=60.0) < 0.75
    loaded = load_gate(str(tmp_path / "gate.safetensors"))
    assert loaded.config.names == ("left", "right")
    assert loaded.config.latent_shape == (4, 8, 8)


def test_resumed_training_equals_uninterrupted(tmp_path):
    lat = two_shards(n=16)
    cfg = GateTrainConfig(steps=12, batch_size=8, checkpoint_every=5)
    full = train_gate(lat, str(tmp_path / "full.safetensors"), cfg)

    class Stop(Exception):
        pass

    def kill_at_7(step, total):
        if step == 7:
            raise Stop

    ckpt = str(tmp_path / "gate.ckpt")
    with pytest.raises(Stop):
        train_gate(lat, str(tmp_path / "resumed.safetensors"), cfg, checkpoint_path=ckpt, progress=kill_at_7)
    assert not (tmp_path / "resumed.safetensors").exists()
    resumed = train_gate(lat, str(tmp_path / "resumed.safetensors"), cfg, checkpoint_path=ckpt)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_bad_shard_latents_are_named():
    lat = two_shards(n=4)
    with pytest.raises(ValueError, match="at least two shards"):
        check_shard_latents({"left": lat["left"]})
    with pytest.raises(ValueError, match="shard 'right'.*non-empty"):
        check_shard_latents({"left": lat["left"], "right": lat["right"][:0]})
    with pytest.raises(ValueError, match="one latent shape"):
        check_shard_latents({"left": lat["left"], "right": torch.zeros(2, 4, 16, 16)})
    bad = lat["right"].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="shard 'right'.*NaN"):
        check_shard_latents({"left": lat["left"], "right": bad})


def test_never_overwrites_an_existing_gate(tmp_path):
    out = tmp_path / "gate.safetensors"
    out.write_bytes(b"user file")
    with pytest.raises(FileExistsError, match="gate.safetensors"):
        train_gate(two_shards(n=4), str(out), GateTrainConfig(steps=1, batch_size=2))
    assert out.read_bytes() == b"user file"


def test_adding_a_shard_warm_starts_from_the_old_gate(tmp_path):
    lat = two_shards()
    old = train_gate(lat, str(tmp_path / "old.safetensors"), GateTrainConfig(steps=300, batch_size=32))
    g = torch.Generator().manual_seed(3)
    lat3 = dict(lat, middle=torch.randn(64, 4, 8, 8, generator=g) * 0.3 - 1.0)
    held3 = dict(two_shards(seed=1), middle=torch.randn(64, 4, 8, 8, generator=g) * 0.3 - 1.0)
    new = train_gate(
        lat3, str(tmp_path / "new.safetensors"), GateTrainConfig(steps=60, batch_size=32, seed=1), init=old
    )
    assert new.config.names == ("left", "right", "middle")
    assert gate_accuracy(new, held3, sigma=0.1) > 0.9


def test_prompt_reading_gate_follows_the_prompt_at_high_noise(tmp_path):
    """With per-image prompts the gate learns P(shard | x_t, prompt): at pure noise the prompt decides."""
    lat = two_shards()
    ctx = {"left": torch.tensor([1.0, 0.0]).expand(64, 2), "right": torch.tensor([0.0, 1.0]).expand(64, 2)}
    train_gate(lat, str(tmp_path / "g.safetensors"), GateTrainConfig(steps=300, batch_size=32),
                     contexts=ctx, null_context=torch.zeros(2))
    from unlearnkit.compose.gate_model import ClassifierGate, load_gate

    gate = ClassifierGate(load_gate(str(tmp_path / "g.safetensors")), ["left", "right"], [1, 1])
    assert gate.reads_prompt
    noise = torch.randn(16, 4, 8, 8) * 14.0
    sigma = torch.full((16,), 14.0)
    assert gate(noise, sigma, torch.tensor([0.0, 1.0]).expand(16, 2))[:, 1].mean() > 0.8
    assert gate(noise, sigma, torch.tensor([1.0, 0.0]).expand(16, 2))[:, 0].mean() > 0.8
    unprompted = gate(noise, sigma)  # the stored empty prompt: no preference at pure noise
    assert (unprompted[:, 0].mean() - 0.5).abs() < 0.25
    with pytest.raises(ValueError, match="contexts of shard 'right'"):
        train_gate(
            lat,
            str(tmp_path / "h.safetensors"),
            GateTrainConfig(steps=1),
            contexts={"left": ctx["left"]},
            null_context=torch.zeros(2),
        )
