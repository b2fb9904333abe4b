"""unlearnkit/webui/encoder_edits.py: in-place encoder swap + SLUG patches inside host wrappers, restored
exactly."""

import pytest
import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from unlearnkit.textencoders.layouts import to_hf
from unlearnkit.unlearn.patches import PatchMismatchError, make_patch
from unlearnkit.webui.encoder_edits import EncoderEdits, encoder_parameters, strip_wrappers


def clip(seed, width=16):
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=100, hidden_size=width, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=8, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    return CLIPTextModel(config).eval()


class EmbeddingsWithFixes(nn.Module):
    """Stand-in of A1111's sd_hijack wrapper around the token embedding (weight under '.wrapped')."""

    def __init__(self, wrapped):
        super().__init__()
        self.wrapped = wrapped

    def forward(self, ids):
        return self.wrapped(ids)


class Inner(nn.Module):
    """…transformer.text_model.<HF keys>, as transformers 4 names a CLIPTextModel inside the webui."""

    def __init__(self, text_model):
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.text_model = text_model


class A1111CondStage(nn.Module):
    """Stand-in of A1111's hijacked cond_stage_model: wrapped.transformer.text_model.…,
    token_embedding.wrapped."""

    def __init__(self, text_model):
        super().__init__()
        self.wrapped = Inner(text_model)
        emb = text_model.embeddings
        emb.token_embedding = EmbeddingsWithFixes(emb.token_embedding)


def encode(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state


IDS = torch.tensor([[1, 5, 7, 99, 3, 0, 0, 0]])


def test_strip_wrappers():
    assert strip_wrappers("wrapped.transformer.text_model.embeddings.token_embedding.wrapped.weight") == \
        "transformer.text_model.embeddings.token_embedding.weight"


def test_swap_then_restore_bytes_exactly():
    host_clip, source = clip(0), clip(1)
    host = A1111CondStage(host_clip)
    before = {k: v.clone() for k, v in host.state_dict().items()}
    swap = to_hf(source.state_dict())[0]
    with EncoderEdits(host, swap):
        assert torch.allclose(encode(host_clip, IDS), encode(source, IDS), atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in host.state_dict().items())


def test_picks_the_encoder_that_fits_among_several():
    class TwoEncoders(nn.Module):  # SDXL-like: a narrow and a wide encoder
        def __init__(self):
            super().__init__()
            self.clip_l = Inner(clip(0, width=16))
            self.clip_g = Inner(clip(2, width=32))

    host = TwoEncoders()
    dims_source = to_hf(clip(3, width=32).state_dict())[0]
    from unlearnkit.textencoders.dims import infer_dims

    names = encoder_parameters(host, infer_dims(dims_source))
    assert all(n.startswith("clip_g.") for n in names.values())
    with pytest.raises(ValueError, match="no single text encoder"):
        encoder_parameters(host, infer_dims(to_hf(clip(4, width=24).state_dict())[0]))


def test_slug_patch_by_suffix_stacks_on_nothing_and_failed_apply_undoes_itself():
    base = clip(0)
    layer = "encoder.layers.1.mlp.fc1.weight"
    delta = torch.randn_like(dict(base.named_parameters())[layer]) * 0.1
    patch = make_patch(base, layer, delta, "concept", 1.0)
    host_clip = clip(0)
    host = A1111CondStage(host_clip)
    before = {k: v.clone() for k, v in host.state_dict().items()}
    with EncoderEdits(host, patches=[patch]):
        w = dict(host.named_parameters())["wrapped.transformer.text_model." + layer]
        assert torch.allclose(w, before["wrapped.transformer.text_model." + layer] + delta)
    assert all(torch.equal(before[k], v) for k, v in host.state_dict().items())
    # a swapped-in encoder is another model: the patch (made for the base) is refused, and the swap undone
    edits = EncoderEdits(host, to_hf(clip(5).state_dict())[0], [patch])
    with pytest.raises(PatchMismatchError):
        edits.apply()
    assert not edits.active and all(torch.equal(before[k], v) for k, v in host.state_dict().items())


def test_open_clip_only_model_is_refused_clearly():
    host = nn.Module()
    host.register_parameter(
        "transformer.resblocks.0.attn.in_proj_weight".replace(".", "_"), nn.Parameter(torch.zeros(1))
    )
    with pytest.raises(ValueError, match="no CLIP text encoder"):
        EncoderEdits(host, to_hf(clip(1).state_dict())[0]).apply()
