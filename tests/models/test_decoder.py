import math

import pytest
import torch

from models.decoder import Decoder, apply_rope, rope_cos_sin
from tiny_models import VOCAB, randomize_norms, tiny_decoder_config


def test_shapes(decoder):
    ids = torch.randint(0, VOCAB, (3, 10))
    assert decoder(ids).shape == (3, 10, VOCAB)
    assert decoder.hidden_states(ids).shape == (3, 10, 32)


def test_causal(decoder):
    ids = torch.randint(0, VOCAB, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % VOCAB
    with torch.no_grad():
        a, b = decoder(ids), decoder(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7], rtol=0, atol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_rope_rotates_pairs_half_apart():
    # HF convention: dims i and i + head_dim/2 form a pair; a rotation keeps each pair's norm
    x = torch.randn(1, 1, 5, 8)
    cos, sin = rope_cos_sin(torch.arange(5)[None], 8, 10000.0, torch.float32)
    y = apply_rope(x, cos, sin)
    pair_norm = lambda t: t[..., :4] ** 2 + t[..., 4:] ** 2  # noqa: E731
    torch.testing.assert_close(pair_norm(x), pair_norm(y))
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])  # position 0: no rotation
    # dim 0 rotates by angle = position (inv_freq 1)
    torch.testing.assert_close(y[0, 0, 3, 0], x[0, 0, 3, 0] * math.cos(3) - x[0, 0, 3, 4] * math.sin(3))


def test_gqa_equals_mha_with_repeated_kv_heads():
    torch.manual_seed(0)
    gqa = Decoder(tiny_decoder_config(n_kv_head=2)).eval()
    mha = Decoder(tiny_decoder_config(n_kv_head=4)).eval()
    state = gqa.state_dict()
    for name, w in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):  # (2 * hd, D) -> (4 * hd, D), kv head j -> 2j, 2j+1
            state[name] = w.view(2, 1, 8, 32).expand(2, 2, 8, 32).reshape(32, 32)
    mha.load_state_dict(state)
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(gqa(ids), mha(ids), rtol=0, atol=1e-5)


def test_left_padding_matches_unpadded(decoder):
    ids = torch.randint(1, VOCAB, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(decoder(padded, attention_mask=mask)[:, 3:], decoder(ids), rtol=0, atol=1e-5)


def test_kv_cache_single_prompt(decoder):
    ids = torch.randint(0, VOCAB, (1, 14))
    with torch.no_grad():
        full = decoder(ids)
        cache = decoder.make_kv_cache(1, 20)
        chunks = [decoder(ids[:, :5], kv_cache=cache)]  # prefill, then a chunk of 3, then one token at a time
        chunks.append(decoder(ids[:, 5:8], kv_cache=cache))
        chunks += [decoder(ids[:, t : t + 1], kv_cache=cache) for t in range(8, 14)]
    assert cache.length == 14
    torch.testing.assert_close(torch.cat(chunks, dim=1), full, rtol=0, atol=1e-5)


def test_kv_cache_ragged_left_padded_batch(decoder):
    lengths, new = [3, 7, 5], 6
    seqs = [torch.randint(1, VOCAB, (n + new,)) for n in lengths]
    P = max(lengths)
    ids = torch.zeros(3, P, dtype=torch.long)
    mask = torch.zeros(3, P, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, P - n :], mask[i, P - n :] = seqs[i][:n], 1
    with torch.no_grad():
        cache = decoder.make_kv_cache(3, P + new)
        steps = [decoder(ids, attention_mask=mask, kv_cache=cache)[:, -1]]  # (3, V) after each prompt
        for t in range(new):
            token = torch.stack([s[lengths[i] + t] for i, s in enumerate(seqs)])[:, None]  # (3, 1)
            mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=1)
            steps.append(decoder(token, attention_mask=mask, kv_cache=cache)[:, -1])
        incremental = torch.stack(steps, dim=1)  # (3, new + 1, V)
        for i, n in enumerate(lengths):
            full = decoder(seqs[i][None])[0, n - 1 :]  # logits from the last prompt token on
            torch.testing.assert_close(incremental[i], full, rtol=0, atol=1e-5)


def test_kv_cache_overflow_is_an_error(decoder):
    cache = decoder.make_kv_cache(1, 4)
    with pytest.raises(ValueError, match="overflow"):
        decoder(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)


def test_tied_embeddings_own_one_tensor():
    model = Decoder(tiny_decoder_config(tie_embeddings=True))
    assert model.lm_head is None and "lm_head.weight" not in model.state_dict()
    untied = Decoder(tiny_decoder_config())
    assert untied.num_params() - model.num_params() == VOCAB * 32


def test_parameter_names_follow_hf_llama():
    names = set(Decoder(tiny_decoder_config()).state_dict())
    layer = {f"model.layers.1.self_attn.{p}_proj.weight" for p in "qkvo"}
    layer |= {f"model.layers.1.mlp.{p}_proj.weight" for p in ("gate", "up", "down")}
    layer |= {"model.layers.1.input_layernorm.weight", "model.layers.1.post_attention_layernorm.weight"}
    assert layer | {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= names
    assert len(names) == 3 + 2 * 9


def test_scaled_init():
    torch.manual_seed(0)
    model = Decoder(tiny_decoder_config(n_layer=8, d_model=64, d_ff=256, init_std=0.02))
    o_std = model.model.layers[0].self_attn.o_proj.weight.std().item()
    q_std = model.model.layers[0].self_attn.q_proj.weight.std().item()
    assert abs(q_std - 0.02) < 0.002 and abs(o_std - 0.02 / 4) < 0.0005


def test_num_params_and_flops():
    cfg = tiny_decoder_config()
    model = Decoder(cfg)
    per_layer = 32 * 32 * 2 + 2 * 32 * 16 + 3 * 32 * 64 + 2 * 32  # q, o; k, v (2 kv heads x 8); MLP; 2 norms
    non_embedding = 2 * per_layer + 32 + VOCAB * 32  # + final norm + lm_head
    assert model.num_params(non_embedding=True) == non_embedding
    assert model.num_params() == non_embedding + VOCAB * 32
    assert model.flops_per_token(64) == 6 * non_embedding + 12 * 2 * 32 * 64
    tied = Decoder(tiny_decoder_config(tie_embeddings=True))
    assert tied.flops_per_token(64) == model.flops_per_token(64)  # the output matmul costs the same


def test_config_validation():
    with pytest.raises(ValueError, match="n_kv_head"):
        tiny_decoder_config(n_kv_head=3)


def test_dropout_only_in_training():
    torch.manual_seed(0)
    model = randomize_norms(Decoder(tiny_decoder_config(dropout=0.5)))
    ids = torch.randint(0, VOCAB, (1, 8))
    assert not torch.allclose(model(ids), model(ids))
    model.eval()
    torch.testing.assert_close(model(ids), model(ids), rtol=0, atol=0)


def test_kv_cache_slots_of_different_lengths_decode_together_and_are_reused(decoder):
    """Continuous batching: sequences prefilled one by one into slots, then decoded together one token per step
    (each at its own position), equal the full forward of each; a freed slot takes a new sequence."""
    seqs = [torch.randint(1, VOCAB, (n,)) for n in (8, 11, 6)]
    decode = 5
    with torch.no_grad():
        full = [decoder(s[None]) for s in seqs]  # (1, n, V) each
        cache = decoder.make_kv_cache(4, 20)
        slots = [2, 0, 3]  # any free slots, in any order
        for seq, slot in zip(seqs, slots):
            cache.select([slot])
            prefill = decoder(seq[None, : len(seq) - decode], kv_cache=cache)
            torch.testing.assert_close(prefill, full[slots.index(slot)][:, : len(seq) - decode], rtol=0, atol=1e-5)
        assert [cache.lengths[s] for s in slots] == [len(s) - decode for s in seqs] and cache.ragged is False
        cache.select(slots)
        assert cache.ragged
        for step in range(decode):
            pos = [len(s) - decode + step for s in seqs]
            token = torch.stack([s[p] for s, p in zip(seqs, pos)])[:, None]  # (3, 1)
            out = decoder(token, kv_cache=cache)  # (3, 1, V)
            for i, p in enumerate(pos):
                torch.testing.assert_close(out[i, 0], full[i][0, p], rtol=0, atol=1e-5)
        # Slot 0 ends; a new, shorter sequence reuses it while the others' caches stay intact.
        cache.free(0)
        new = torch.randint(1, VOCAB, (3,))
        cache.select([0])
        torch.testing.assert_close(decoder(new[None], kv_cache=cache), decoder(new[None]), rtol=0, atol=1e-5)
        assert cache.lengths == [3, 0, len(seqs[0]), len(seqs[2])]


def test_kv_cache_slot_errors(decoder):
    cache = decoder.make_kv_cache(2, 8)
    with pytest.raises(ValueError, match="distinct"):
        cache.select([0, 0])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        cache.select([2])
    cache.select([0])
    with torch.no_grad():
        decoder(torch.ones(1, 3, dtype=torch.long), kv_cache=cache)
        cache.select(None)
        with pytest.raises(ValueError, match="one token each"):
            decoder(torch.ones(2, 2, dtype=torch.long), kv_cache=cache)
        cache.select([0])
        with pytest.raises(ValueError, match="overflow"):
            decoder(torch.ones(1, 6, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="slot 0 holds 3 positions, cannot keep 4"):
        cache.truncate(0, 4)
    cache.truncate(0, 1)
    assert cache.lengths == [1, 0]


@pytest.mark.parametrize("tied", [False, True])
def test_resize_vocab_adds_mean_rows_and_keeps_old_logits(tied):
    from models.decoder import resize_vocab

    torch.manual_seed(0)
    model = randomize_norms(Decoder(tiny_decoder_config(tie_embeddings=tied))).eval()
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        before = model(ids)
    old_embed = model.model.embed_tokens.weight.detach().clone()
    old_head = None if tied else model.lm_head.weight.detach().clone()
    assert resize_vocab(model, VOCAB + 3, [VOCAB, VOCAB + 1, VOCAB + 2]) is model
    assert model.cfg.vocab_size == VOCAB + 3 and model.model.embed_tokens.weight.shape == (VOCAB + 3, 32)
    with torch.no_grad():
        after = model(ids)
    assert after.shape == (2, 12, VOCAB + 3)
    torch.testing.assert_close(after[..., :VOCAB], before, rtol=0, atol=0)  # old tokens' logits unchanged
    new = model.model.embed_tokens.weight[VOCAB:]
    torch.testing.assert_close(new, old_embed.mean(dim=0).expand(3, -1))
    if tied:
        assert model.lm_head is None
    else:
        assert model.lm_head.weight.shape == (VOCAB + 3, 32)
        torch.testing.assert_close(model.lm_head.weight[VOCAB:], old_head.mean(dim=0).expand(3, -1))
    # The grown model is an ordinary one: it saves and loads with its new size, and trains every row.
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="grows a vocabulary"):
        resize_vocab(model, VOCAB, [VOCAB])


def test_resize_vocab_into_unused_rows_averages_only_the_others():
    """A model with more rows than its tokenizer's pieces (sizes padded to a multiple): new ids reuse spare rows."""
    from models.decoder import resize_vocab

    model = Decoder(tiny_decoder_config()).eval()
    spare = model.model.embed_tokens.weight[: VOCAB - 2].detach().clone()
    resize_vocab(model, VOCAB, [VOCAB - 2, VOCAB - 1])
    assert model.cfg.vocab_size == VOCAB
    torch.testing.assert_close(model.model.embed_tokens.weight[VOCAB - 1], spare.mean(dim=0))
