"""Paths the tests share."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Small training runs: one worker, a few steps, fractional CPUs so Ray Data's tasks always find one.
TINY_TRAIN = ["trainer.micro_batch_size=8", "trainer.log_every=5", "trainer.eval_every=1000", "trainer.eval_batches=4",
              "trainer.warmup_steps=5", "trainer.lr=3e-3", "trainer.cpus_per_worker=0.4"]

# The whole lifecycle on tiny sizes (python -m pipelines.lifecycle ...): every stage a few steps on a 64-wide decoder.
# `++` sets a stage's key whether or not conf/lifecycle.yaml's block already names it.
_STAGE = ["trainer.micro_batch_size=4", "trainer.log_every=5", "trainer.torch_threads=1", "trainer.eval_every=1000",
          "trainer.ckpt_every=1000", "trainer.cpus_per_worker=0.4", "trainer.eval_batches=2", "trainer.warmup_steps=2"]
LIFECYCLE_TINY = [
    "data.general_docs=600", "data.medical_docs=50",
    "lifecycle.pretrain.groups=['model=decoder_tiny','objective=clm']", "lifecycle.pretrain.tokenizer.vocab_size=1000",
    *(f"++lifecycle.{stage}.{o}" for stage in ("pretrain", "domain", "instruct", "reward", "dpo") for o in _STAGE),
    *(f"++lifecycle.{stage}.data.seq_len=64" for stage in ("pretrain", "domain", "instruct", "reward", "dpo")),
    "++lifecycle.pretrain.data.rows_per_shard=200", "lifecycle.pretrain.trainer.lr=3e-3",
    "lifecycle.pretrain.trainer.max_steps=30", "lifecycle.domain.trainer.max_steps=6",
    "lifecycle.instruct.trainer.max_steps=6", "lifecycle.reward.trainer.max_steps=4", "lifecycle.dpo.trainer.max_steps=4",
    "lifecycle.rlhf.align.iterations=2", "lifecycle.rlhf.align.prompts_per_iteration=4",
    *(f"++lifecycle.rlhf.align.{o}" for o in ("group_size=2", "max_new_tokens=12", "max_prompt_tokens=48",
                                             "learner.minibatch_size=8", "timeout_s=120")),
    "eval.cloze_limit=16", "eval.qa_limit=16", "eval.safety_limit=6", "eval.ppl_batches=2",
    "eval.qa_max_new_tokens=12", "eval.safety_max_new_tokens=16", "eval.show=0",
]
