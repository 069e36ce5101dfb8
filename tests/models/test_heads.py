import torch

from models.heads import RewardModel, ScalarHead, ValueModel, last_token_index
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
    model = RewardModel(decoder).eval()
    ids = torch.randint(1, VOCAB, (1, 6))
    pad = torch.zeros(1, 2, dtype=torch.long)
    real = torch.ones(1, 6, dtype=torch.long)
    with torch.no_grad():
        alone = model(ids)
        left = model(torch.cat([pad, ids], dim=1), attention_mask=torch.cat([pad, real], dim=1))
        right = model(torch.cat([ids, pad], dim=1), attention_mask=torch.cat([real, pad], dim=1))
    torch.testing.assert_close(left, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(right, alone, rtol=0, atol=1e-5)


def test_value_model_per_token(decoder):
    values = ValueModel(decoder)(torch.randint(0, VOCAB, (3, 7)))
    assert values.shape == (3, 7)
