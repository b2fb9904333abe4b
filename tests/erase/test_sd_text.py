"""SDTextEncoder (SD1.x / SD2.x / SDXL conditioning from CLIP towers) and training it: stop() leaves a
checkpoint of that step, resuming gives the uninterrupted weights."""

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from unlearnkit.erase.advunlearn import EraseConfig, TrainingStopped, train_erased_encoder
from unlearnkit.erase.layers import select_trainable
from unlearnkit.erase.prompts import encode_with_prefix
from unlearnkit.erase.sd_text import SDTextEncoder, TowerOutput, pad_after_end, split_pooled, text_model_of

END = 2
IDS = torch.tensor([[1, 5, 7, 2, 2, 2], [1, 9, 2, 2, 2, 2]])


def tower(seed, width):
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=100, hidden_size=width, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=2 * width, max_position_embeddings=6, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0)
    return CLIPTextModel(cfg).eval()


def test_pad_after_end_keeps_the_first_end_token():
    assert pad_after_end(IDS, END, 0).tolist() == [[1, 5, 7, 2, 0, 0], [1, 9, 2, 0, 0, 0]]


def test_sd1_and_sd2_outputs_are_the_hidden_states_sd_reads():
    t = tower(0, 16)
    with torch.no_grad():
        ref = t(input_ids=IDS, output_hidden_states=True)
        sd1 = SDTextEncoder([t], [TowerOutput()], END)(IDS).last_hidden_state
        sd2 = SDTextEncoder([t], [TowerOutput(-2, True)], END)(IDS).last_hidden_state
    assert torch.equal(sd1, ref.last_hidden_state)
    assert torch.allclose(sd2, text_model_of(t).final_layer_norm(ref.hidden_states[-2]))
    assert not torch.allclose(sd1, sd2)


def test_sdxl_concatenates_towers_and_carries_the_pooled_row():
    l_t, g_t = tower(0, 16), tower(1, 24)
    proj = torch.nn.Linear(24, 20, bias=False)
    enc = SDTextEncoder([l_t, g_t], [TowerOutput(-2, False), TowerOutput(-2, False, 0)], END, [1], proj)
    with torch.no_grad():
        out = enc(IDS).last_hidden_state
        ctx, pooled = split_pooled(out, 20)
        g_ids = pad_after_end(IDS, END, 0)
        g_ref = g_t(input_ids=g_ids, output_hidden_states=True)
        want_pooled = proj(g_ref.last_hidden_state[torch.arange(2), torch.tensor([3, 2])])
    assert out.shape == (2, 7, 40) and enc.config.hidden_size == 40
    assert torch.allclose(ctx[..., 16:], g_ref.hidden_states[-2]) and torch.allclose(pooled, want_pooled)
    assert torch.equal(out[:, -1, 20:], torch.zeros(2, 20))
    names = [n for n, _ in select_trainable(enc, "all")]  # only the trained tower (G) trains
    assert names and all(n.startswith("towers.1.") for n in names)
    assert enc.text_model is text_model_of(g_t)  # adversarial tokens live in the trained tower's embeddings
    delta = torch.zeros(1, 2, 24, requires_grad=True)
    encode_with_prefix(enc, IDS, delta).sum().backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_stop_checkpoints_that_step_and_resume_is_exact(tiny_components, tmp_path):
    comps = tiny_components()
    cfg = EraseConfig(concept=("a photo of a cat",), retain=("a photo of a dog",), attack="fast_at",
                      iterations=5, warmup=1, lr=1e-3, sampler_steps=3, bank_size=1, attack_steps=1,
                      attack_lr=1e-2)
    full = train_erased_encoder(comps, cfg, tmp_path / "a", checkpoint_every=100, progress=False)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) == 3

    with pytest.raises(TrainingStopped) as stopped:
        train_erased_encoder(comps, cfg, tmp_path / "b", checkpoint_every=100, progress=False, stop=stop)
    assert stopped.value.step == 3
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["checkpoint-0000003.pt"]
    resumed = train_erased_encoder(comps, cfg, tmp_path / "b", checkpoint_every=100, resume=True,
                                   progress=False)
    assert resumed.resumed_from == 3 and resumed.losses == full.losses
    assert resumed.attack_norms == full.attack_norms and full.attack_norms[0] == 0.0 < full.attack_norms[-1]
    for (name, a), b in zip(full.encoder.state_dict().items(), resumed.encoder.state_dict().values()):
        assert torch.equal(a, b), name
