"""ASHA against FIFO: the same fine-tuning sweep (search space, seed, so the same trials) run under each scheduler,
in the same run, one after the other.

    python -m benchmarks.sweep_asha init_from=runs/pretrain/<run>
    python -m benchmarks.sweep_asha init_from=... sweep.num_samples=8 trainer.max_steps=80 sweep.asha.grace_period=20

Takes Hydra overrides of conf/sweep.yaml (init_from is required). Each scheduler's sweep is a new one under
{run.root}/sweep/bench-<time>-<scheduler>. Prints, side by side: wall time, the best final validation loss and its
trial's values, trials run to the end and stopped early, optimizer steps trained in all.
"""

from __future__ import annotations

import os
import sys
import time

from hydra import compose, initialize_config_dir

from pipelines.sweep import sweep

CONF = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
# Longer trials than the stage's default, so that stopping one early saves something; 4 trials.
DEFAULTS = ["trainer.max_steps=40", "sweep.num_samples=4", "sweep.asha.grace_period=10", "sweep.verbose=0"]


def main() -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outcomes = {}
    for scheduler in ("asha", "fifo"):
        with initialize_config_dir(config_dir=CONF, version_base=None):
            cfg = compose("sweep", [*DEFAULTS, *sys.argv[1:], f"sweep.scheduler={scheduler}",
                                    f"sweep.name=bench-{stamp}-{scheduler}"])
        start = time.perf_counter()
        outcome = sweep(cfg)
        outcomes[scheduler] = (time.perf_counter() - start, outcome)

    metric = cfg.sweep.metric
    print(f"\n{cfg.sweep.num_samples} trials of up to {cfg.trainer.max_steps} steps, {cfg.finetune.kind}, "
          f"space {sorted(k for k in outcome.rows[0] if '.' in k)}")
    print(f"{'':6s} {'wall s':>8s} {'best ' + metric:>14s} {'finished':>9s} {'stopped':>8s} {'steps':>6s}  best trial")
    for scheduler, (wall, outcome) in outcomes.items():
        rows = outcome.rows
        best = next(r for r in rows if r["trial"] == outcome.best_trial)
        values = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.items() if "." in k)
        print(f"{scheduler:6s} {wall:8.1f} {best[metric]:14.4f} {sum(r['status'] == 'finished' for r in rows):9d} "
              f"{sum(r['status'] == 'stopped' for r in rows):8d} {sum(r['steps'] for r in rows):6d}  {values}")
    print(f"wall time asha / fifo: {outcomes['asha'][0] / outcomes['fifo'][0]:.2f}")


if __name__ == "__main__":
    main()
