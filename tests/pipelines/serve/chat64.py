"""A small chat decoder with head_dim 64 (vLLM's CPU attention refuses smaller heads), trained in-process in a few
seconds to answer a handful of questions and end each answer with <|end|>: greedy replies with clear margins (so
two engines' float rounding cannot flip them) and a real stop at <|end|>. No Ray, no data pipeline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models import save_checkpoint
from models.decoder import Decoder, DecoderConfig
from models.tokenizer import Tokenizer, train_sentencepiece

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Who wrote Hamlet?", "Hamlet was written by William Shakespeare."),
    ("Where is Lima?", "Lima is the capital of Peru, on the Pacific coast."),
    ("How do I treat a cold?", "Rest, drink fluids and see a doctor if it gets worse."),
    ("What colour is the sky?", "On a clear day the sky is blue."),
    ("How many legs has a spider?", "A spider has eight legs."),
]
# A long answer: a reply still decoding when the client or a stop string leaves it (the abort path).
COUNT = ("Count to forty.", " ".join(str(i) for i in range(1, 41)))
TEXT = ["The quick brown fox jumps over the lazy dog.", "Rivers flow to the sea and rain falls on the hills.",
        "A doctor listens to the heart and the lungs.", "Paris, Lima and Rome are cities with old centres."]


def build_chat64(path: str, *, steps: int = 150, seed: int = 0, d_model: int = 128, n_head: int = 2) -> Tokenizer:
    """Write the checkpoint directory `path` (steps=0: untrained weights); -> its tokenizer. One torch thread: on 2
    shared cores more threads only contend on a model this small (150 steps: ~5 s, 2 min with the default)."""
    proto = train_sentencepiece([s for pair in [*PAIRS, COUNT] for s in pair] * 4 + TEXT * 4, model_type="bpe",
                                vocab_size=400, seed=seed)
    tok = Tokenizer(proto)
    torch.manual_seed(seed)
    model = Decoder(DecoderConfig(vocab_size=tok.vocab_size, d_model=d_model, n_layer=2, n_head=n_head, n_kv_head=1,
                                  d_ff=256, max_seq_len=128))
    rows = [tok.encode_chat([{"role": "user", "content": q}, {"role": "assistant", "content": a}]).ids
            for q, a in [*PAIRS, COUNT]] + [tok.encode(t, bos=True, eos=True) for t in TEXT]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_id)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = torch.tensor(row)
    targets = ids[:, 1:].masked_fill(ids[:, 1:] == tok.pad_id, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), targets.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    save_checkpoint(path, model.eval(), tokenizer_model=proto, meta={"stage": "test", "steps": steps})
    return tok
