"""Stage 3b — a fine-tuning sweep: `python -m pipelines.sweep init_from=runs/pretrain/<run> [sweep.num_samples=8]`.

The recipe: check the sweep settings and the fine-tuning config they vary (no Ray needed); join Ray; build or reuse
the shards once; run `sweep.num_samples` trials with Ray Tune, each one fine-tuning run on Ray Train workers with
hyperparameters drawn from `sweep.space` (ASHA stops the trials that fall behind at its rungs); print the results
table and save it; copy the best finished trial's final checkpoint to `best/`, the directory later stages take as
`init_from=`.

Everything lands in `{run.root}/sweep/{sweep.name}/`: Tune's experiment state and one directory per trial (named
by its trial id), `finetune/<trial id>/` each trial's fine-tuning run, `config.json` (the config the sweep started
with), `results.csv` and `best/`.

Resuming: the same command again restores the Tune experiment (`Tuner.restore`). Finished and stopped trials are
not run again; an interrupted trial starts again, and its fine-tuning run (same run name, same storage) resumes from
its latest checkpoint; a trial whose run finished just before the interruption replays its reports from its
`final/metrics.json` instead of training again. A finished sweep run again prints its table again. A sweep runs with
the settings it started with: a re-run with other settings is refused (choose a new `sweep.name`).

Each trial is a Tune function that fits a `TorchTrainer` with a `TuneReportCallback` (Train V2 cannot be passed to
`tune.Tuner` directly); it asks Tune for almost no CPU, the Train workers it starts ask for theirs.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs
from omegaconf import DictConfig, OmegaConf

from cluster.connect import connect
from pipelines import storage
from pipelines.checkpoints import FINAL
from pipelines.entry import stage_main
from pipelines.errors import ConfigError

log = logging.getLogger(__spec__.name)  # not "__main__" under `python -m`

STAGE = "finetune"
CONFIG = "config.json"
RANGES = ("uniform", "loguniform", "randint")  # {kind: [low, high]} (randint: high excluded)
LISTS = ("choice", "grid")  # {kind: [values]}; grid: every value, num_samples times over
# Tune's own trial actor: the Train workers it starts ask for the CPUs (Tune refuses 0).
TRIAL_RESOURCES = {"cpu": 0.01}


@dataclass
class SweepOutcome:
    sweep_dir: str
    best_dir: str
    best_trial: str
    rows: list[dict]


def sweep_directory(cfg: DictConfig) -> str:
    return storage.join(storage.root(cfg.run.root, "run.root"), "sweep", cfg.sweep.name)


def flat_space(space: dict, prefix: str = "") -> dict[str, Any]:
    """`{trainer: {lr: {loguniform: [...]}}}` and `{trainer.lr: {loguniform: [...]}}` alike, as dotted keys."""
    flat: dict[str, Any] = {}
    for key, spec in space.items():
        name = f"{prefix}{key}"
        kinds = sorted(set(spec) & set(RANGES + LISTS)) if isinstance(spec, dict) else []
        if kinds and len(spec) > 1:
            raise ConfigError(f"sweep.space.{name}: one distribution per key, got {sorted(spec)} (replace one with "
                              f"'~sweep.space.{name}' '+sweep.space.{name}={{{kinds[0]}: [...]}}')")
        if isinstance(spec, dict) and not kinds:
            inner = flat_space(spec, f"{name}.")
        else:
            inner = {name: spec}
        if set(inner) & set(flat):
            raise ConfigError(f"sweep.space names {sorted(set(inner) & set(flat))[0]} twice")
        flat |= inner
    return flat


def search_space(cfg: DictConfig) -> dict[str, Any]:
    """`sweep.space` as Tune's param_space: dotted config key -> Tune domain (or a fixed value)."""
    from ray import tune

    space = flat_space(OmegaConf.to_container(cfg.sweep.space, resolve=True))
    if not space:
        raise ConfigError("sweep.space is empty: name at least one config key to vary, e.g. "
                          "'sweep.space={trainer.lr: {loguniform: [1e-4, 3e-3]}}'")
    missing = object()
    params = {}
    for key, spec in space.items():
        if key.split(".")[0] in ("sweep", "run", "cluster") or OmegaConf.select(cfg, key, default=missing) is missing:
            raise ConfigError(f"sweep.space: {key} is not a fine-tuning setting (a dotted key of the config, "
                              f"e.g. trainer.lr)")
        if not isinstance(spec, dict):
            params[key] = spec  # a fixed value for every trial
            continue
        (kind, args), = spec.items()
        if kind in RANGES:
            if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)
                    and args[0] < args[1]):
                raise ConfigError(f"sweep.space.{key}: {kind} takes [low, high] with low < high, got {args!r}")
            params[key] = getattr(tune, kind)(*args)
        else:
            if not (isinstance(args, list) and args):
                raise ConfigError(f"sweep.space.{key}: {kind} takes a non-empty list of values, got {args!r}")
            params[key] = tune.choice(args) if kind == "choice" else tune.grid_search(args)
    return params


def check_sweep(cfg: DictConfig) -> None:
    """Sweep settings that can be checked before Ray starts."""
    s, t = cfg.sweep, cfg.trainer
    if s.scheduler not in ("asha", "fifo"):
        raise ConfigError(f"sweep.scheduler must be asha or fifo, got {s.scheduler!r}")
    if s.mode not in ("min", "max"):
        raise ConfigError(f"sweep.mode must be min or max, got {s.mode!r}")
    if s.num_samples < 1 or s.max_concurrent_trials < 1:
        raise ConfigError(f"sweep.num_samples ({s.num_samples}) and sweep.max_concurrent_trials "
                          f"({s.max_concurrent_trials}) must be at least 1")
    if s.metric.startswith("val_") and (t.eval_every != t.log_every or t.ckpt_every % t.log_every):
        # Tune needs the metric in every report: reports come every log_every steps and at checkpoints.
        raise ConfigError(f"sweep.metric={s.metric} must be in every report: set trainer.eval_every to "
                          f"trainer.log_every ({t.log_every}, now {t.eval_every}) and trainer.ckpt_every to a "
                          f"multiple of it (now {t.ckpt_every})")
    if s.scheduler == "asha" and not (1 <= s.asha.grace_period < s.asha.max_t and s.asha.reduction_factor > 1):
        raise ConfigError(f"sweep.asha: need 1 <= grace_period ({s.asha.grace_period}) < max_t ({s.asha.max_t}) and "
                          f"reduction_factor > 1 ({s.asha.reduction_factor})")
    search_space(cfg)


def saved_settings(cfg: DictConfig) -> dict:
    """What a sweep is: every setting but the cluster's (a resumed sweep may run on another cluster)."""
    settings = OmegaConf.to_container(cfg, resolve=False)
    settings.pop("cluster")
    return json.loads(json.dumps(settings))


def check_same_sweep(cfg: DictConfig, sweep_dir: str) -> None:
    """A sweep directory holds one sweep: a re-run must ask for what it started with (Tune restores its own search
    space, sample count and scheduler; other settings would silently differ between its trials)."""
    path = storage.join(sweep_dir, CONFIG)
    if not storage.exists(path):
        return
    before, now = flat_settings(storage.read_json(path)), flat_settings(saved_settings(cfg))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        diff = ", ".join(f"{k}={now.get(k)!r} (was {before.get(k)!r})" for k in changed[:4])
        diff += f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ConfigError(f"sweep {sweep_dir} was started with other settings: {diff}; re-run it with the same "
                          f"settings to resume it, or choose a new sweep.name")


def flat_settings(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix[:-1]: tree}
    return {k: v for key, value in tree.items() for k, v in flat_settings(value, f"{prefix}{key}.").items()}


def run_trial(params: dict, *, base: dict, sweep_dir: str, workdir: str) -> None:
    """One trial, in Tune's trial actor: the fine-tuning run of `base` with `params` applied, named by the trial id."""
    from hydra.core.utils import setup_globals
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from pipelines.finetune import finetune
    from pipelines.train.driver import run_directory

    if os.path.isdir(workdir):
        os.chdir(workdir)  # relative paths in the config mean what they meant where the sweep was launched
    setup_globals()  # Hydra's resolvers (${now:...}) for the parts of the config still unresolved
    cfg = OmegaConf.create(base)
    for key, value in params.items():
        OmegaConf.update(cfg, key, value, merge=False)
    cfg.run.root, cfg.run.name = sweep_dir, tune.get_context().get_trial_id()
    finished = storage.join(run_directory(cfg, STAGE), FINAL, "metrics.json")
    if storage.exists(finished):  # trained before an interruption, but Tune had not recorded it yet
        for metrics in storage.read_json(finished)["history"]:
            tune.report(metrics)
        return
    finetune(cfg, callbacks=[TuneReportCallback()])


def trial_dirname(trial) -> str:
    return trial.trial_id


def make_tuner(cfg: DictConfig, base: dict, sweep_dir: str):
    """A new Tuner for the sweep, or the interrupted one restored from `sweep_dir`."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    s = cfg.sweep
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base, sweep_dir=sweep_dir, workdir=os.getcwd()), TRIAL_RESOURCES)
    if tune.Tuner.can_restore(sweep_dir):
        log.info("resuming sweep %s", sweep_dir)
        return tune.Tuner.restore(sweep_dir, trainable=trainable, restart_errored=True)
    if s.scheduler == "asha":
        # Rungs in optimizer steps (every report has one, and it survives a resumed trial). A trial that passes the
        # last rung runs to its own max_steps: stopped at max_t it would die before writing its final checkpoint.
        scheduler = ASHAScheduler(time_attr="step", grace_period=s.asha.grace_period, max_t=s.asha.max_t,
                                  reduction_factor=s.asha.reduction_factor, stop_last_trials=False)
    else:
        scheduler = FIFOScheduler()
    root, name = sweep_dir.rsplit("/", 1)
    return tune.Tuner(
        trainable,
        param_space=search_space(cfg),
        # The random search seeded, and the concurrency limit there: Tune ignores max_concurrent_trials when it is
        # given a search algorithm of this kind.
        tune_config=tune.TuneConfig(metric=s.metric, mode=s.mode, num_samples=s.num_samples, scheduler=scheduler,
                                    search_alg=BasicVariantGenerator(random_state=s.seed,
                                                                     max_concurrent=s.max_concurrent_trials),
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(name=name, storage_path=root, verbose=s.verbose,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def reports(result) -> list[dict]:
    """A trial's reports, from Tune's result.json (one JSON object a line) in its directory. Not progress.csv:
    Tune appends the reports of a restored trial there in another column order."""
    from ray.tune.result import EXPR_RESULT_FILE

    path = storage.join(result.path, EXPR_RESULT_FILE)
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_bytes(path).decode().splitlines() if line.strip()]


def results_table(cfg: DictConfig, grid, sweep_dir: str) -> list[dict]:
    """One row per trial: its id, sampled values, last and best metric, steps run, status."""
    s = cfg.sweep
    pick = min if s.mode == "min" else max
    rows = []
    for result in grid:
        # The trial id (what its fine-tuning run is named after): a restored trial's directory may carry a suffix.
        trial = (result.metrics or {}).get("trial_id") or os.path.basename(result.path)
        history = reports(result)
        values = [float(r[s.metric]) for r in history if s.metric in r]
        finished = storage.exists(storage.join(sweep_dir, STAGE, trial, FINAL, "metrics.json"))
        status = "error" if result.error else "finished" if finished else "stopped"
        rows.append({"trial": trial, **{k: result.config[k] for k in sorted(result.config)},
                     s.metric: values[-1] if values else math.nan, f"best_{s.metric}": pick(values, default=math.nan),
                     "steps": history[-1]["step"] if history else 0, "status": status})
    return sorted(rows, key=lambda r: r["trial"])


def best_row(cfg: DictConfig, rows: list[dict]) -> dict | None:
    """The finished trial whose final metric is best (its final checkpoint is the one that metric describes)."""
    finished = [r for r in rows if r["status"] == "finished" and not math.isnan(r[cfg.sweep.metric])]
    return (min if cfg.sweep.mode == "min" else max)(finished, key=lambda r: r[cfg.sweep.metric], default=None)


def first_error(grid) -> str:
    """The last line of the first failed trial's error (its traceback is in Tune's output above)."""
    error = next(r.error for r in grid if r.error)
    return [line for line in str(error).splitlines() if line.strip()][-1].strip()


def write_results(rows: list[dict], path: str) -> None:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    storage.write_bytes(path, out.getvalue().encode())


def format_table(rows: list[dict], best: str | None) -> str:
    def cell(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[cell(v) for v in r.values()] + ["<- best" if r["trial"] == best else ""] for r in rows]
    header = [*rows[0], ""]
    widths = [max(len(str(h)), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip()
                     for line in [header, *cells])


def copy_checkpoint(source: str, target: str) -> None:
    """`target` becomes a copy of the checkpoint directory `source` (local or URI)."""
    storage.delete_dir(target)
    source_fs, source_path = storage.filesystem(source)
    target_fs, target_path = storage.filesystem(target)
    target_fs.create_dir(target_path, recursive=True)
    pafs.copy_files(source_path, target_path, source_filesystem=source_fs, destination_filesystem=target_fs)


def prepare(cfg: DictConfig, sweep_dir: str) -> dict:
    """Fine-tuning's own checks (its `plan`), then the shards built or reused once: returns the config every trial
    starts from (the launch config, with the checkpoint and the shards found here)."""
    from pipelines.data.build import prepare_shards
    from pipelines.finetune import given_shards, plan
    from pipelines.train.driver import check_worker_resources

    base = OmegaConf.to_container(cfg, resolve=False)
    base.pop("sweep")
    # plan() fills in the model and tokenizer; a Hugging Face init_from is converted once, into the sweep's directory.
    cfg = copy.deepcopy(cfg)
    cfg.run.root, cfg.run.name = sweep_dir, "base"
    checked = plan(cfg)
    connect(cfg.cluster)
    check_worker_resources(cfg)
    manifest = given_shards(cfg, checked.tokenizer_sha256) if cfg.shards else prepare_shards(cfg)
    if cfg.sweep.metric.startswith("val_") and not manifest["splits"]["valid"]["files"]:
        raise ConfigError(f"sweep.metric={cfg.sweep.metric} needs validation examples, and {manifest['dir']} has "
                          f"none (raise data.valid_fraction)")
    base.update(init_from=checked.init_from, shards=manifest["dir"])
    return base


def sweep(cfg: DictConfig) -> SweepOutcome:
    sweep_dir = sweep_directory(cfg)
    check_sweep(cfg)
    check_same_sweep(cfg, sweep_dir)
    settings = saved_settings(cfg)
    base = prepare(cfg, sweep_dir)
    if not storage.exists(storage.join(sweep_dir, CONFIG)):
        storage.write_json(storage.join(sweep_dir, CONFIG), settings)
    grid = make_tuner(cfg, base, sweep_dir).fit()
    rows = results_table(cfg, grid, sweep_dir)
    results = storage.join(sweep_dir, "results.csv")
    write_results(rows, results)
    best = best_row(cfg, rows)
    print(format_table(rows, best["trial"] if best else None), flush=True)
    if best is None:
        failed = sum(r["status"] == "error" for r in rows)
        raise ConfigError(f"no trial of sweep {sweep_dir} finished ({failed} of {len(rows)} failed"
                          + (f"; the first: {first_error(grid)}" if failed else "") + f"); see {results}")
    best_dir = storage.join(sweep_dir, "best")
    copy_checkpoint(storage.join(sweep_dir, STAGE, best["trial"], FINAL), best_dir)
    return SweepOutcome(sweep_dir=sweep_dir, best_dir=best_dir, best_trial=best["trial"], rows=rows)


@stage_main("sweep")
def main(cfg: DictConfig) -> None:
    outcome = sweep(cfg)
    print(f"results: {storage.join(outcome.sweep_dir, 'results.csv')}\n"
          f"best checkpoint: {outcome.best_dir}  (trial {outcome.best_trial}; next stage: init_from=...)")


if __name__ == "__main__":
    main()
