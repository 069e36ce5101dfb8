import pytest
import torch

from models import build_model
from models.encoder import Encoder, SequenceClassifier
from tiny_models import VOCAB, tiny_encoder_config


def test_shapes(encoder):
    ids = torch.randint(1, VOCAB, (3, 10))
    hidden = encoder(ids, token_type_ids=torch.zeros_like(ids))
    assert hidden.shape == (3, 10, 32)
    assert encoder.mlm_logits(hidden).shape == (3, 10, VOCAB)
    assert encoder.nsp_logits(hidden).shape == (3, 2)
    assert SequenceClassifier(encoder, num_labels=5).eval()(ids).shape == (3, 5)


def test_padding_does_not_change_real_tokens(encoder):
    ids = torch.randint(1, VOCAB, (2, 7))
    padded = torch.cat([ids, torch.randint(1, VOCAB, (2, 5))], dim=1)  # arbitrary tokens, masked as padding
    mask = torch.cat([torch.ones(2, 7), torch.zeros(2, 5)], dim=1).long()
    with torch.no_grad():
        short = encoder(ids)
        long = encoder(padded, attention_mask=mask)
    torch.testing.assert_close(long[:, :7], short, rtol=0, atol=1e-5)


def test_default_mask_is_input_ids_not_pad(encoder):
    ids = torch.randint(1, VOCAB, (2, 6))
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)  # pad_id 0
    with torch.no_grad():
        torch.testing.assert_close(encoder(padded)[:, :6], encoder(ids), rtol=0, atol=1e-5)


def test_bidirectional(encoder):
    ids = torch.randint(1, VOCAB, (1, 8))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % VOCAB or 1
    with torch.no_grad():
        assert not torch.allclose(encoder(ids)[:, 0], encoder(changed)[:, 0])


def test_segments_matter(encoder):
    ids = torch.randint(1, VOCAB, (1, 8))
    segments = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 1]])
    with torch.no_grad():
        assert not torch.allclose(encoder(ids), encoder(ids, token_type_ids=segments))


def test_mlm_decoder_is_tied_to_word_embedding(encoder):
    hidden = torch.randn(1, 3, 32)
    logits = encoder.mlm_logits(hidden)
    logits[0, 0, 5].backward()
    assert encoder.embeddings.word_embeddings.weight.grad[5].abs().sum() > 0
    names = dict(encoder.named_parameters())
    assert "mlm_head.bias" in names and not any("mlm_head.decoder" in n for n in names)


def test_classifier_reuses_the_pooler(encoder):
    ids = torch.randint(1, VOCAB, (2, 6))
    clf = SequenceClassifier(encoder, num_labels=3).eval()
    with torch.no_grad():
        expected = clf.classifier(encoder.pooled(encoder(ids)))
        torch.testing.assert_close(clf(ids), expected)


def test_num_params_and_flops():
    model = Encoder(tiny_encoder_config())  # vocab 97, d_model 32, 2 layers, d_ff 64
    embeddings = VOCAB * 32 + 32 * 32 + 2 * 32  # word, position, segment
    assert model.num_params() - model.num_params(non_embedding=True) == embeddings
    per_layer = 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 2 * 32  # q k v o; MLP up, down; 2 norms
    every_position = 2 * per_layer + 2 * 32  # + the embedding norm
    mlm_head = (32 * 32 + 32) + 2 * 32 + VOCAB + VOCAB * 32  # transform, its norm, output bias, tied decoder
    per_sequence = (32 * 32 + 32) + (32 * 2 + 2)  # pooler, NSP head
    attention = 12 * 2 * 32 * 16
    assert model.num_params(non_embedding=True) == every_position + mlm_head - VOCAB * 32 + per_sequence
    hand = 6 * (every_position + 0.15 * mlm_head + per_sequence / 16) + attention
    assert model.flops_per_token(16, decoded_fraction=0.15) == pytest.approx(hand, rel=1e-12)
    # MLM decodes only the masked positions: 85% of the head's work per token is not done.
    assert model.flops_per_token(16) - model.flops_per_token(16, decoded_fraction=0.15) == \
        pytest.approx(0.85 * 6 * mlm_head, rel=1e-12)
    assert model.flops_per_token(16, decoded_fraction=0.0) == pytest.approx(hand - 0.15 * 6 * mlm_head, rel=1e-12)


def test_build_model_rejects_unknown_keys():
    values = dict(kind="encoder", vocab_size=10, d_model=8, n_layer=1, n_head=2, d_ff=16, max_seq_len=8)
    assert isinstance(build_model(values), Encoder)
    with pytest.raises(ValueError, match=r"unknown encoder config key\(s\) \['n_kv_head'\].*allowed keys"):
        build_model({**values, "n_kv_head": 2})
    with pytest.raises(ValueError, match=r"missing encoder config key\(s\) \['d_ff'\]"):
        build_model({k: v for k, v in values.items() if k != "d_ff"})
    with pytest.raises(ValueError, match="kind must be one of"):
        build_model({**values, "kind": "gpt"})
