import torch

from models.heads import ScalarHead, ScalarModel, last_token_index
from tiny_models import VOCAB


def test_last_token_index_left_and_right_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [4, 2, 4]


def test_scalar_head_reads_last_real_token():
    head = ScalarHead(4)
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    scores = head(hidden, mask)
    assert scores.shape == (2,)
    torch.testing.assert_close(scores, head.proj(hidden[[0, 1], [2, 4]]).squeeze(-1))
    assert head.per_token(hidden).shape == (2, 5)


def test_reward_model_ignores_padding(decoder):
    model = ScalarModel(decoder).eval()
    ids = torch.randint(1, VOCAB, (1, 6))
    pad = torch.zeros(1, 2, dtype=torch.long)
    real = torch.ones(1, 6, dtype=torch.long)
    with torch.no_grad():
        alone = model(ids)
        left = model(torch.cat([pad, ids], dim=1), attention_mask=torch.cat([pad, real], dim=1))
        right = model(torch.cat([ids, pad], dim=1), attention_mask=torch.cat([real, pad], dim=1))
    torch.testing.assert_close(left, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(right, alone, rtol=0, atol=1e-5)


def test_per_token_values_and_score_of_ragged_sequences(decoder):
    model = ScalarModel(decoder).eval()
    assert model(torch.randint(0, VOCAB, (3, 7)), per_token=True).shape == (3, 7)
    sequences = [[5, 6, 7], [8, 9, 10, 11, 12]]
    with torch.no_grad():
        alone = [float(model(torch.tensor([s]))[0]) for s in sequences]
    torch.testing.assert_close(torch.tensor(model.score(sequences, pad_id=0, batch_size=2)), torch.tensor(alone),
                               rtol=0, atol=1e-5)
