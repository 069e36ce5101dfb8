"""Tokenizer throughput on the same >= 50 MB of generated text and the same sentencepiece model, in one run:

  (1) plain: one process, a per-line loop of json.loads + sp.encode (the baseline);
  (2) sentencepiece's own batched, multi-threaded encode (texts already in memory);
  (3) our Ray Data shard pipeline end to end: read -> tokenize on the actor pool -> pack -> parquet shards.

    python -m benchmarks.tokenize_throughput [--docs 320000] [--actors 2] [--out data/bench]

Prints tokens/s and MB/s of each and the ratios to (1). The Ray cluster is started before timing (3); the actor
pool's start-up is inside the timing.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time

from hydra import compose, initialize_config_dir

from models.tokenizer import Tokenizer, train_sentencepiece
from pipelines.corpus import ensure_corpus
from pipelines.text import split_sentences

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def plain_loop(files: list[str], tok: Tokenizer) -> tuple[int, int]:
    tokens = size = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                size += len(line)
                tokens += len(tok.sp.encode(json.loads(line)["text"])) + 2  # + bos/eos, as the shards hold
    return tokens, size


def batched_threads(texts: list[str], tok: Tokenizer, threads: int) -> int:
    tokens = 0
    for i in range(0, len(texts), 20000):
        tokens += sum(map(len, tok.sp.encode(texts[i:i + 20000], num_threads=threads))) + 2 * len(texts[i:i + 20000])
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=320000, help="general documents to generate (320k ~ 53 MB)")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--out", default="data/bench")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    corpus = os.path.join(out, "corpus")
    ensure_corpus(corpus, general_docs=args.docs, medical_docs=10)
    files = sorted(glob.glob(os.path.join(corpus, "general", "*.jsonl")))
    size = sum(os.path.getsize(f) for f in files)
    print(f"corpus: {len(files)} files, {size / 1e6:.1f} MB")

    model_path = os.path.join(out, "tokenizer.model")
    if not os.path.exists(model_path):
        with open(files[0]) as f:
            sample = [s for line, _ in zip(f, range(20000)) for s in split_sentences(json.loads(line)["text"])]
        with open(model_path, "wb") as f:
            f.write(train_sentencepiece(sample, model_type="bpe", vocab_size=4096))
    tok = Tokenizer.load(model_path)

    start = time.perf_counter()
    tokens_plain, _ = plain_loop(files, tok)
    t_plain = time.perf_counter() - start

    texts = [json.loads(line)["text"] for path in files for line in open(path, encoding="utf-8")]
    start = time.perf_counter()
    tokens_batched = batched_threads(texts, tok, threads=os.cpu_count())
    t_batched = time.perf_counter() - start
    del texts

    import ray

    from pipelines.data import prepare_shards

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("data", [f"data.root={out}", "data=files", f"data.paths=[{os.path.join(corpus, 'general')}]",
                               f"tokenizer.path={model_path}", f"data.tokenize_actors={args.actors}", "force=true"])
    start = time.perf_counter()
    manifest = prepare_shards(cfg)
    t_ray = time.perf_counter() - start
    tokens_ray = sum(s["tokens"] + s["dropped_tail_tokens"] for s in manifest["splits"].values())
    startup = manifest["seconds_to_first_batch"]
    ray.shutdown()

    rows = [("(1) plain per-line loop", tokens_plain, t_plain),
            (f"(2) sentencepiece batched, {os.cpu_count()} threads", tokens_batched, t_batched),
            (f"(3) Ray Data shard pipeline, {args.actors} actors", tokens_ray, t_ray)]
    print(f"\n{'method':45s} {'tokens':>12s} {'seconds':>8s} {'Mtok/s':>8s} {'MB/s':>7s} {'vs (1)':>7s}")
    base = tokens_plain / t_plain
    for name, tokens, seconds in rows:
        print(f"{name:45s} {tokens:12d} {seconds:8.2f} {tokens / seconds / 1e6:8.3f} {size / seconds / 1e6:7.1f} "
              f"{tokens / seconds / base:6.2f}x")
    print(f"(3) spent {startup:.2f}s before its first tokenized batch reached the writer (actor pool start-up, first "
          f"read); after that it ran at {tokens_ray / max(1e-9, t_ray - startup) / 1e6:.3f} Mtok/s "
          f"({tokens_ray / max(1e-9, t_ray - startup) / base:.2f}x (1)).")
    assert tokens_plain == tokens_batched == tokens_ray, "the three methods must produce the same tokens"


if __name__ == "__main__":
    main()
