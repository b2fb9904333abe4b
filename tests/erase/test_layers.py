"""Choosing the trainable text-encoder layers (whole-component matching, clear refusals)."""
import pytest

from unlearnkit.erase.layers import parse_layer_spec, select_trainable


def trained_layers(encoder):
    return sorted(
        {int(n.split(".")[2]) for n, p in encoder.named_parameters() if p.requires_grad and ".layers." in n}
    )


def test_layer_index_1_does_not_select_10_or_11(make_encoder):
    enc = make_encoder(hidden_size=8, num_attention_heads=2, intermediate_size=8, num_hidden_layers=12)
    names = [n for n, _ in select_trainable(enc, "1")]
    assert trained_layers(enc) == [1] and not any("final_layer_norm" in n for n in names)
    assert all(".layers.1." in n for n in names)


def test_all_last_and_named(make_encoder):
    enc = make_encoder(hidden_size=8, num_attention_heads=2, intermediate_size=8, num_hidden_layers=4)
    select_trainable(enc, "all")
    assert trained_layers(enc) == [0, 1, 2, 3]
    assert (
        enc.final_layer_norm.weight.requires_grad and not enc.embeddings.token_embedding.weight.requires_grad
    )
    select_trainable(enc, "last:2")
    assert trained_layers(enc) == [2, 3]
    select_trainable(enc, "0,final_layer_norm,embeddings")
    assert trained_layers(enc) == [0] and enc.embeddings.token_embedding.weight.requires_grad


@pytest.mark.parametrize("spec", ["", "last:0", "last:5", "4", "mlp", "-1"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ValueError, match="layers"):
        parse_layer_spec(spec, 4)
