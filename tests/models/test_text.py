import pytest
import torch

from egovlp.models.config import TextConfig
from egovlp.models.text import RobertaModel

from .conftest import randomise_

transformers = pytest.importorskip("transformers")

CFG = TextConfig(vocab_size=120, width=32, depth=3, num_heads=4, ffn_dim=64, max_positions=40, dropout=0.0)


def hf_model():
    config = transformers.RobertaConfig(
        vocab_size=CFG.vocab_size,
        hidden_size=CFG.width,
        num_hidden_layers=CFG.depth,
        num_attention_heads=CFG.num_heads,
        intermediate_size=CFG.ffn_dim,
        max_position_embeddings=CFG.max_positions,
        type_vocab_size=1,
        pad_token_id=1,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return transformers.RobertaModel(config, add_pooling_layer=False).eval()


def ids_and_mask():
    ids = torch.randint(3, 120, (3, 8))
    ids[:, 0] = 0
    mask = torch.ones(3, 8, dtype=torch.long)
    ids[1, 5], ids[1, 6:], mask[1, 6:] = 2, 1, 0
    ids[2, 2], ids[2, 3:], mask[2, 3:] = 2, 1, 0
    return ids, mask


@pytest.mark.parametrize("impl", ["sdpa", "reference"])
def test_unfused_text_tower_equals_transformers_roberta(impl):
    hf = randomise_(hf_model(), std=0.1)
    ours = RobertaModel(CFG, num_fusion_layers=2).eval()  # fused layers run without video = plain layers
    state = {k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected
    assert all("crossattention_t2i" in k or "alpha_t2i" in k for k in missing)
    for m in ours.modules():
        if hasattr(m, "attn_impl"):
            m.attn_impl = impl
    ids, mask = ids_and_mask()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    valid = mask.bool()
    torch.testing.assert_close(got[valid], expected[valid], atol=2e-5, rtol=1e-5)


def test_positions_skip_padding_like_roberta():
    model = RobertaModel(CFG)
    ids = torch.tensor([[0, 7, 8, 2, 1, 1]])
    emb = model.embeddings
    x = emb.word_embeddings(ids) + emb.position_embeddings(torch.tensor([[2, 3, 4, 5, 1, 1]]))
    x = emb.LayerNorm(x + emb.token_type_embeddings.weight[0])
    torch.testing.assert_close(emb.eval()(ids), x)


def test_too_long_text_is_a_clear_error():
    with pytest.raises(ValueError, match="longer than"):
        RobertaModel(CFG)(torch.zeros(1, 50, dtype=torch.long))
