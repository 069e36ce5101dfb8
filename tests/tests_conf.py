"""Paths the tests share."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Small training runs: one worker, a few steps, fractional CPUs so Ray Data's tasks always find one.
TINY_TRAIN = ["trainer.micro_batch_size=8", "trainer.log_every=5", "trainer.eval_every=1000", "trainer.eval_batches=4",
              "trainer.warmup_steps=5", "trainer.lr=3e-3", "trainer.cpus_per_worker=0.4"]
