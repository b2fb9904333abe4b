"""The files Erase Concept writes (one per erased tower, erased_file.tower_file / tower_metadata) load in the
webui's encoder swap: SD1.x-like single encoder and SDXL-like pairs (each file finds its own tower)."""

import torch
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from unlearnkit import io
from unlearnkit.erase.erased_file import tower_file, tower_metadata
from unlearnkit.textencoders.dims import TextEncoderDims
from unlearnkit.textencoders.layouts import to_hf
from unlearnkit.textencoders.loading import load_text_encoder_state
from unlearnkit.webui.encoder_edits import EncoderEdits

IDS = torch.tensor([[1, 5, 7, 99, 2, 0, 0, 0]])


def clip(seed, width):
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=100, hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=2 * width, max_position_embeddings=8, hidden_act="gelu",
                            bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return CLIPTextModel(config).eval()


class Tower(nn.Module):
    def __init__(self, text_model):
        super().__init__()
        self.transformer = text_model  # Forge: clip_l.transformer.text_model.<HF keys>


def write(path, model, projection=None):
    dims = TextEncoderDims.from_hf_config(model.config)
    state = tower_file(to_hf(model.state_dict())[0], torch.float16, projection)
    io.save_safetensors(path, state, tower_metadata(dims, {"tower": "test", "run": "r"}))
    return path


def encode(model):
    with torch.no_grad():
        return model(input_ids=IDS).last_hidden_state


def test_sdxl_pair_files_each_swap_into_their_own_tower(tmp_path):
    host = nn.Module()
    host.clip_l, host.clip_g = Tower(clip(0, 16)), Tower(clip(1, 32))
    erased_l, erased_g = clip(2, 16), clip(3, 32)
    files = [write(tmp_path / "e_clip_l.safetensors", erased_l),
             write(tmp_path / "e_clip_g.safetensors", erased_g, torch.randn(32, 32))]
    before = {k: v.clone() for k, v in host.state_dict().items()}
    for file, tower, erased in zip(files, (host.clip_l, host.clip_g), (erased_l, erased_g)):
        state, info = load_text_encoder_state(file)
        assert info.dims.hidden_act == "gelu" and info.dims.num_heads == 2  # from the metadata
        with EncoderEdits(host, state):
            got, want = encode(tower.transformer), encode(erased.half().float())
            assert torch.allclose(got, want, atol=1e-3)
        assert all(torch.equal(before[k], v) for k, v in host.state_dict().items())
