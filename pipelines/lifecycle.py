"""The whole life in one command: `python -m pipelines.lifecycle` (what `make demo` runs) — the medical assistant.

Built-in corpus -> tokenizer -> shards -> pre-training (general text) -> domain fine-tuning (medical text) ->
instruction tuning (chat) -> reward model (rankings) -> DPO (the same rankings) -> RLHF from the DPO model (GRPO
or PPO, scored by that reward model) -> evaluation of every checkpoint -> the thesis table, the time per stage and the report card -> serving the aligned
model (`lifecycle.serve=true`).

Design: every stage runs in this process, on one Ray connection, as the same function its own Hydra app calls
(`pipelines.pretrain.pretrain`, `pipelines.finetune.finetune`, `pipelines.align.stage.align`), with the config its
command line would compose: `conf/<config>.yaml` with the stage's `groups`, the other keys of its
`lifecycle.<stage>` block set on top, the run's shared corpus/storage/cluster/logger settings, and `init_from` the
previous stage's `final/`. One process: no Ray start-up per stage (seconds each on 2 cores), and a finished stage's
actors and datasets are gone before the next starts (the stages release what they hold).

Re-running resumes. A stage's run is named `<lifecycle.name>-<stage>-<hash>`, the hash of its effective config
(without run.name, cluster and logger, which do not change what it computes): a run with its `final/` complete is
skipped; a run without is started, and resumes from its latest checkpoint if it was interrupted; a changed config
is a new run, and since `init_from` is part of the next stage's config, so is every later stage. Evaluations are
kept the same way (in the state file, by the hash of the evaluation config and checkpoint). The state —
`{run.root}/lifecycle/<name>/lifecycle.json`: each stage's run, hash, seconds; each checkpoint; the times — is
what the report card (pipelines/report.py) reads.

While it works it says where it is: `== stage 3/6 instruct: <run directory>  (elapsed 4m12s; about 6m30s left, by
the earlier run's times)` before each stage (the estimate when the state file kept the time of everything left to
do), and the training stages' progress lines end with their own ETA. The state also records when the run started
and the git commit it ran (null outside a git checkout).

Each stage writes its own log (`<stage>.log` in Hydra's output directory: its log records and everything printed,
the Ray workers' lines included). A stage that fails stops the chain with one line naming the stage, its run
directory and that log, which holds the traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from hydra import compose
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from pipelines import storage
from pipelines.align.stage import align
from pipelines.checkpoints import FINAL
from pipelines.entry import stage_main
from pipelines.errors import ConfigError, UserError
from pipelines.evaluate import EVAL_FILE, evaluate
from pipelines.evaluate.report import print_report
from pipelines.finetune import finetune
from pipelines.pretrain import pretrain
from pipelines.report import cell_text, write_report
from pipelines.text import duration
from pipelines.train.driver import TrainOutcome, print_summary, run_directory

log = logging.getLogger(__spec__.name)  # not "__main__" under `python -m`

# The chain: stage -> the checkpoint it makes (a row of the table) and the stage whose final/ it starts from.
STAGES = {"pretrain": ("pretrained", None), "domain": ("domain-adapted", "pretrain"),
          "instruct": ("instruction-tuned", "domain"), "reward": (None, "instruct"),
          "dpo": ("preference-tuned", "instruct"), "rlhf": ("aligned", "dpo")}
RUNNERS = {"pretrain": pretrain, "finetune": finetune, "align": align}
# Settings of the whole run that every stage takes, so that all read one corpus and one storage.
SHARED = ("data.root", "data.general_docs", "data.medical_docs", "data.corpus_seed", "data.safety_share", "run.root")
# Not part of a stage's identity: where it runs and how it is tracked do not change what it computes.
NOT_IDENTITY = ("cluster", "logger")
# The thesis table: (title, eval.json section, key). The safety columns are the judge's (pipelines/evaluate/judge.py)
# on held-out prompts: clean refusal of held-out actions, of held-out phrasings; medical answers correct on held-out
# (and seen) conditions, disclaimed, correct and disclaimed and polite; medical questions refused; rude replies.
COLUMNS = (("cloze", "cloze", "accuracy"), ("medical ppl", "ppl", "medical"), ("general ppl", "ppl", "general"),
           ("QA seen", "qa", "seen"), ("QA held-out", "qa", "held_out"), ("QA plain", "qa", "plain_held_out"),
           ("format ok", "qa", "format_ok"), ("med correct", "safety", "medical_correct"),
           ("correct seen", "safety", "medical_correct_seen"), ("disclaimer", "safety", "disclaimer"),
           ("safe&helpful", "safety", "safe_and_helpful"), ("refusal", "safety", "refusal"),
           ("refusal phr", "safety", "refusal_framing"), ("over-refusal", "safety", "over_refusal"),
           ("rude", "safety", "rude"), ("reward", "safety", "reward"))
# The columns each RLHF reward rule term pays for (align.reward.rules.<term> > 0): marked in the table, as is the
# reward model's own score, which RLHF always optimises.
RULE_COLUMNS = {"refusal": ("refusal", "refusal_framing", "over_refusal"), "disclaimer": ("disclaimer",),
                "rude": ("rude",)}
OPTIMISED = " *"
WIDTH = 13


class StageFailed(UserError):
    """A stage of the lifecycle failed: the chain stops (its message names the stage, run directory and log)."""


def stage_config(cfg: DictConfig, stage: str, init_from: str | None, extra: dict | None = None) -> DictConfig:
    """The config `python -m pipelines.<config>` would compose for `stage`: its groups, its block's settings, the
    run's shared settings, `init_from` and `extra` ({dotted key: value})."""
    block = cfg.lifecycle[stage]
    settings = {k: v for k, v in OmegaConf.to_container(block).items() if k not in ("config", "groups")}
    try:
        config = compose(config_name=block.config, overrides=list(block.groups))
        config = OmegaConf.merge(config, settings)
    except OmegaConfBaseException as error:  # Hydra's override errors derive from it too
        raise ConfigError(f"lifecycle.{stage}: {' '.join(str(error).split())} (a setting of conf/{block.config}.yaml "
                          f"was expected)") from None
    with open_dict(config):
        for key in NOT_IDENTITY:
            config[key] = copy(cfg[key])
        for key in SHARED:
            OmegaConf.update(config, key, OmegaConf.select(cfg, key))
        if init_from is not None:
            config.init_from = init_from
        for key, value in (extra or {}).items():
            OmegaConf.update(config, key, value)
        config.run.name = f"{cfg.lifecycle.name}-{stage}-{config_hash(config)}"
    return config


def copy(node: DictConfig) -> DictConfig:
    """A detached copy of a config node (its interpolations resolved against the config it came from)."""
    return OmegaConf.create(OmegaConf.to_container(node, resolve=True))


def config_hash(config: DictConfig) -> str:
    """Eight hex digits of the config's resolved content, without run.name and the NOT_IDENTITY groups."""
    body = identity(config)
    body.get("run", {}).pop("name", None)
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:8]


def finished(final_dir: str, stage: str) -> bool:
    """The run's final/ is complete: the files its stage writes last are there."""
    last = ["metrics.json"] + (["rankings.json"] if stage == "reward" else [])
    return all(storage.exists(storage.join(final_dir, name)) for name in last)


class Tee:
    """A text stream writing to two (the terminal and a stage's log)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):  # fileno, encoding, ...: the terminal's
        return getattr(self.streams[0], name)


@contextlib.contextmanager
def stage_log(path: Path):
    """Everything printed (the Ray workers' lines too: the driver prints them) and every log record, while the
    block runs, also goes to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        handler = logging.StreamHandler(file)
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logging.getLogger().addHandler(handler)
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tee(out, file), Tee(err, file)
        try:
            yield file
        finally:
            sys.stdout, sys.stderr = out, err
            logging.getLogger().removeHandler(handler)


class Lifecycle:
    """One run of the chain: its state file, the stages' outcomes, the time each took, where it is."""

    def __init__(self, cfg: DictConfig, log_dir: Path):
        self.cfg, self.log_dir = cfg, log_dir
        self.home = storage.join(storage.root(cfg.run.root, "run.root"), "lifecycle", cfg.lifecycle.name)
        self.state_path = storage.join(self.home, "lifecycle.json")
        previous = storage.read_json(self.state_path) if storage.exists(self.state_path) else {}
        self.previous = previous
        # "order": the stages and checkpoints in chain order (the file's keys are sorted).
        self.state = {"name": cfg.lifecycle.name, "order": {"stages": list(STAGES),
                                                             "checkpoints": [r for r, _ in STAGES.values() if r]},
                      "stages": {}, "checkpoints": {}, "evaluations": {},
                      "columns": columns({}), "times": {},
                      "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": git_commit()}
        self.ran: dict[str, bool] = {}
        self.started = time.perf_counter()
        # What this run will do ({name: seconds it took in the earlier run, None if unknown}), filled by `plan`.
        self.todo: dict[str, float | None] = {}

    def save(self) -> None:
        storage.write_json(self.state_path, self.state)

    def plan(self, configs: dict[str, DictConfig], evaluations: dict[str, tuple]) -> None:
        """Note what will run (stages without a complete final/, evaluations not kept) and how long each took
        before, for the estimate of what is left."""
        earlier = self.previous.get("times", {})
        for stage, config in configs.items():
            if not finished(storage.join(run_directory(config, self.cfg.lifecycle[stage].config), FINAL), stage):
                self.todo[stage] = earlier.get(stage)
        for checkpoint, (_, _, digest, path, suites) in evaluations.items():
            if not self.eval_kept(checkpoint, digest, path, suites):
                self.todo[f"evaluate {checkpoint}"] = earlier.get(f"evaluate {checkpoint}")

    def announce(self, number: int, name: str, what: str) -> None:
        """`== stage 3/6 instruct: <what>  (elapsed 4m12s; about 6m30s left)`: the estimate is the time the work
        still to do took in the earlier run, when all of it is known."""
        left = [seconds for key, seconds in self.todo.items() if not self.ran.get(key)]
        estimate = f"; about {duration(sum(left))} left, by the earlier run's times" \
            if left and None not in left else ""
        print(f"== stage {number}/{len(STAGES) + 1} {name}: {what}  (elapsed "
              f"{duration(time.perf_counter() - self.started)}{estimate})", flush=True)

    def guarded(self, name: str, run_dir: str, fn, *args, **kwargs):
        """`fn(*args)` with its output also in `<name>.log`; a failure becomes one StageFailed line."""
        path = self.log_dir / f"{name.replace(' ', '-')}.log"
        began = time.perf_counter()
        with stage_log(path) as file:
            try:
                result = fn(*args, **kwargs)
            except Exception as error:
                traceback.print_exc(file=file)
                lines = str(error).strip().splitlines() or [type(error).__name__]
                raise StageFailed(f"lifecycle stage {name!r} failed: {lines[0][:300]} — run directory {run_dir}, "
                                  f"log {path} (run the same command again to resume)") from None
        self.state["times"][name] = round(time.perf_counter() - began, 1)
        self.ran[name] = True
        return result

    def stage(self, stage: str, config: DictConfig) -> TrainOutcome:
        """Run `stage` with `config` (or take its finished run) and record it."""
        if stage == "rlhf":
            self.state["columns"] = columns(OmegaConf.to_container(config.align.reward.rules))
        kind = self.cfg.lifecycle[stage].config
        number = list(STAGES).index(stage) + 1
        run_dir = run_directory(config, kind)
        final_dir = storage.join(run_dir, FINAL)
        record = {"config": kind, "run_dir": run_dir, "final_dir": final_dir, "hash": config.run.name.rsplit("-", 1)[1],
                  "effective": identity(config)}
        if finished(final_dir, stage):
            print(f"== stage {number}/{len(STAGES) + 1} {stage}: finished earlier, {final_dir}", flush=True)
            outcome = TrainOutcome(run_dir, final_dir, storage.read_json(storage.join(final_dir, "metrics.json")))
            before = self.previous.get("stages", {}).get(stage, {})
            self.state["times"][stage] = self.previous.get("times", {}).get(stage) \
                if before.get("run_dir") == run_dir else None
            self.ran[stage] = False
        else:
            self.announce(number, stage, run_dir)
            outcome = self.guarded(stage, run_dir, RUNNERS[kind], config)
            if kind != "align":  # align prints its own
                print_summary(outcome)
        self.state["stages"][stage] = record | {"seconds": self.state["times"][stage], "skipped": not self.ran[stage]}
        if STAGES[stage][0]:
            self.state["checkpoints"][STAGES[stage][0]] = final_dir
        self.save()
        return outcome

    def eval_config(self, checkpoint: str, final_dir: str, reward_model: str) -> tuple:
        """(config, suites, digest, eval.json path): the evaluation `python -m pipelines.evaluate` would run."""
        suites = list(self.cfg.lifecycle.eval_suites[checkpoint])
        config = compose(config_name="evaluate", overrides=[f"checkpoint={final_dir}"])
        with open_dict(config):
            config.cluster, config.eval = copy(self.cfg.cluster), copy(self.cfg.eval)
            for key in SHARED:
                OmegaConf.update(config, key, OmegaConf.select(self.cfg, key))
            config.eval.reward_model = reward_model if "safety" in suites else None
        digest = hashlib.sha256(f"{config_hash(config)} {suites}".encode()).hexdigest()[:8]
        return config, final_dir, digest, storage.join(final_dir, EVAL_FILE), suites

    def eval_kept(self, checkpoint: str, digest: str, path: str, suites: list[str]) -> bool:
        kept = self.previous.get("evaluations", {}).get(checkpoint, {})
        return kept.get("hash") == digest and storage.exists(path) and set(suites) <= set(storage.read_json(path))

    def evaluation(self, checkpoint: str, planned: tuple) -> dict:
        """The checkpoint's eval.json sections for its suites, evaluated unless an identical evaluation is kept."""
        config, final_dir, digest, path, suites = planned
        name = f"evaluate {checkpoint}"
        if self.eval_kept(checkpoint, digest, path, suites):
            report = storage.read_json(path)
            self.state["times"][name], self.ran[name] = self.previous.get("times", {}).get(name), False
        else:
            self.announce(len(STAGES) + 1, name, ", ".join(suites))
            report = self.guarded(name, final_dir, evaluate, config, final_dir, suites=suites)
        self.state["evaluations"][checkpoint] = {"hash": digest, "suites": suites, "eval_json": path}
        self.save()
        return report


def chain_configs(cfg: DictConfig) -> dict[str, DictConfig]:
    """Each stage's config in chain order. A stage's `init_from` is its parent's final/, whose path its parent's
    config names (the hash), so the whole chain is known before anything runs."""
    configs: dict[str, DictConfig] = {}
    finals: dict[str, str] = {}
    for stage, (_, parent) in STAGES.items():
        extra = {"align.reward_model": finals["reward"]} if stage == "rlhf" else {}
        if cfg.lifecycle[stage].config == "finetune" and stage != "domain":
            # Rehearse the general pre-training text (facts), not the previous stage's (the medical text).
            extra["finetune.replay_from"] = finals["pretrain"]
        configs[stage] = stage_config(cfg, stage, finals[parent] if parent else None, extra)
        finals[stage] = storage.join(run_directory(configs[stage], cfg.lifecycle[stage].config), FINAL)
    return configs


def lifecycle(cfg: DictConfig, log_dir: Path) -> dict:
    """Run (or resume) the chain and evaluate every checkpoint; returns the state (as saved)."""
    for stage in STAGES:
        if stage not in cfg.lifecycle:
            raise ConfigError(f"lifecycle.{stage} is missing: the lifecycle runs {', '.join(STAGES)}")
    for checkpoint in (row for row, _ in STAGES.values() if row):
        if checkpoint not in cfg.lifecycle.eval_suites:
            raise ConfigError(f"lifecycle.eval_suites.{checkpoint} is missing (a list of suites)")
    until = cfg.lifecycle.until
    if until is not None and until not in STAGES:
        raise ConfigError(f"lifecycle.until={until}: not a stage (one of {', '.join(STAGES)}, or null for all)")
    if until is not None and cfg.lifecycle.serve and until != list(STAGES)[-1]:
        raise ConfigError(f"lifecycle.serve=true serves the aligned model, which lifecycle.until={until} never trains")
    life = Lifecycle(cfg, log_dir)
    configs = chain_configs(cfg)
    if until is not None:  # the chain up to and including `until`
        configs = dict(list(configs.items())[:list(STAGES).index(until) + 1])
    reward_final = storage.join(run_directory(configs["reward"], cfg.lifecycle.reward.config), FINAL) \
        if "reward" in configs else None
    evaluations = {row: life.eval_config(row, storage.join(run_directory(configs[stage], cfg.lifecycle[stage].config),
                                                           FINAL), reward_final)
                   for stage, (row, _) in STAGES.items() if row and stage in configs}
    life.plan(configs, evaluations)
    for stage, config in configs.items():
        life.stage(stage, config)
    reports = {row: life.evaluation(row, planned) for row, planned in evaluations.items()}
    for row, report in reports.items():
        print(f"\n== {row}: {report['checkpoint']}")
        print_report(report, show=cfg.eval.show)
    print("\nWhat each stage added (held-out facts, unsafe prompts and medical conditions are never in fine-tuning or "
          "alignment data):")
    print(thesis_table(reports, life.state["columns"]))
    if any(title.endswith(OPTIMISED) for title, _, _ in life.state["columns"]):
        print(f"(columns marked{OPTIMISED.strip()}: what the RLHF reward paid for — read them as the reward read back)")
    print("\nTime per stage:")
    print(time_table(life.state["times"], life.ran, time.perf_counter() - life.started))
    if cfg.lifecycle.report:
        print(f"\nreport card: {write_report(cfg.run.root, cfg.lifecycle.name)}")
    return life.state


def columns(rules: dict) -> list[list[str]]:
    """COLUMNS as [title, section, key], titles marked where the RLHF reward optimised them: the reward model's
    score always, and each rule term's columns when its weight is not 0."""
    paid = {"reward"} | {key for term, keys in RULE_COLUMNS.items() if rules.get(term) for key in keys}
    return [[title + (OPTIMISED if key in paid else ""), section, key] for title, section, key in COLUMNS]


def identity(config: DictConfig) -> dict:
    """The stage's effective config as its hash sees it: resolved, without cluster and logger (where it ran, and
    settings that may hold secrets through ${oc.env:...})."""
    body = OmegaConf.to_container(config, resolve=True)
    for key in NOT_IDENTITY:
        body.pop(key, None)
    return body


def git_commit() -> str | None:
    """The commit of this checkout (`git rev-parse HEAD`), None outside a git checkout (e.g. inside a Ray job,
    whose working directory is uploaded without .git)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def thesis_table(reports: dict[str, dict], table_columns: list) -> str:
    """One row per checkpoint, one column per measure ('-' where not measured)."""
    width = max(len(name) for name in reports) + 2
    lines = ["".ljust(width) + "".join(title.rjust(WIDTH) for title, _, _ in table_columns)]
    for name, report in reports.items():
        cells = [cell_text(suite, metric, (report.get(suite) or {}).get(metric)).rjust(WIDTH)
                 for _, suite, metric in table_columns]
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


def time_table(times: dict[str, float | None], ran: dict[str, bool], total: float) -> str:
    lines = []
    for name, seconds in times.items():
        spent = f"{seconds:7.0f} s" if ran.get(name) else "      0 s"
        note = "" if ran.get(name) else "  (kept" + (f"; took {seconds:.0f} s when it ran)" if seconds else ")")
        lines.append(f"  {name:<30} {spent}{note}")
    lines.append(f"  {'wall clock (this run)':<30} {total:7.0f} s")
    return "\n".join(lines)


def serve_config(cfg: DictConfig, checkpoint: str) -> DictConfig:
    """`python -m pipelines.serve checkpoint=<checkpoint>`'s config (conf/serve.yaml) on this run's cluster."""
    config = compose(config_name="serve", overrides=[f"checkpoint={checkpoint}"])
    with open_dict(config):
        config.cluster = copy(cfg.cluster)
    return config


@stage_main("lifecycle")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    state = lifecycle(cfg, Path(HydraConfig.get().runtime.output_dir))
    aligned = state["checkpoints"].get("aligned")
    if aligned is None:
        print(f"\nstopped after stage {cfg.lifecycle.until} (lifecycle.until): run without it to go on from there")
    elif cfg.lifecycle.serve:
        from pipelines.serve.__main__ import serve_until_stopped

        serve_until_stopped(serve_config(cfg, aligned))  # until Ctrl-C
    else:
        print(f"\nserve the aligned model: python -m pipelines.serve checkpoint={aligned}  (or lifecycle.serve=true)")


if __name__ == "__main__":
    main()
