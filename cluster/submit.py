"""Submit a stage to a Ray cluster as a job, and look after it: a small wrapper over Ray's `JobSubmissionClient`.

    python -m cluster.submit pretrain trainer.num_workers=4 data.root=s3://b/data run.root=s3://b/runs
    python -m cluster.submit finetune init_from=s3://b/runs/pretrain/x --no-wait     # prints the submission id
    python -m cluster.submit status <id> | logs <id> [--follow] | stop <id>

- The job's entry point is the stage's module, `python -m pipelines.<stage> <overrides>`; the overrides are composed
  here with Hydra first, so a typo fails in a second on your machine instead of minutes later on the cluster.
- The working directory (this repository) is uploaded, without `runs/`, `data/`, `.venv/`, `outputs/`,
  `multirun/` and `.git/` (shards and checkpoints belong on shared storage, not in a job's package).
- A mistake (a typo in an override, an unknown stage or submission id, a dashboard that does not answer) is one
  line, `error: ...`, with exit status 2, as the stages' own.
- Logs are followed to the terminal; Ctrl-C asks whether to stop the job (else it keeps running and the command
  prints how to follow it again). The exit code is the job's: its driver's exit code when Ray knows it, 0 when it
  succeeded, 1 when it failed, 130 when it was stopped. The closing line gives Ray's reason without the tail of
  the logs Ray appends to it (they were just followed).
- The address: `--address`, else RAY_API_SERVER_ADDRESS, else an http(s) RAY_ADDRESS, else http://127.0.0.1:8265;
  the command says which (and where from) before it submits. An explicit `--address` wins over both variables
  (Ray's own client would take RAY_API_SERVER_ADDRESS over the address it is given). With token authentication
  (Ray's default) the client needs RAY_AUTH_MODE=token; it is set for you when ~/.ray/auth_token exists and
  RAY_AUTH_MODE is not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# gitignore syntax: anchored at the repository root (a bare "data/" would also drop conf/data/ and pipelines/data/).
EXCLUDES = ["/runs/", "/data/", "/.venv/", "/outputs/", "/multirun/", "/.git/", "__pycache__/"]
COMMANDS = ("status", "logs", "stop")
EXIT_STOPPED = 130
EXIT_USER_ERROR = 2  # as pipelines/entry.py (not imported: it pulls in Hydra's app machinery)
# Ray's job client takes these over the address it is given (ray.dashboard.utils.get_address_for_submission_client).
ADDRESS_VARIABLES = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


class SubmitError(Exception):
    """A mistake on this side (address, stage, overrides, submission id): one line, exit status 2."""


# Hydra stages that are not jobs: the terminal chat talks to a person at a terminal.
INTERACTIVE = {"chat"}


def stages() -> list[str]:
    """Modules under pipelines/ that are Hydra stages (a module with conf/<name>.yaml) and can run as a job."""
    names = {p.stem for p in (ROOT / "pipelines").glob("*.py")} | {
        p.parent.name for p in (ROOT / "pipelines").glob("*/__main__.py")}
    return sorted(n for n in names - INTERACTIVE if (ROOT / "conf" / f"{n}.yaml").exists())


def address(given: str | None) -> tuple[str, str]:
    """(the dashboard's address, where it came from)."""
    if given:
        if not given.startswith(("http://", "https://")):
            raise SubmitError(f"--address {given} must be the dashboard's http(s) address (e.g. http://<head>:8265), "
                              f"not the GCS address")
        return given, "--address"
    for name in ADDRESS_VARIABLES:
        value = os.environ.get(name)
        if value and value.startswith(("http://", "https://")):
            return value, name
    return "http://127.0.0.1:8265", "the default"


def client(addr: str):
    """A job client for `addr` and no other: the address variables are hidden from Ray while it resolves it."""
    if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
        os.environ["RAY_AUTH_MODE"] = "token"
    from ray.job_submission import JobSubmissionClient

    hidden = {name: os.environ.pop(name) for name in ADDRESS_VARIABLES if name in os.environ}
    try:
        return JobSubmissionClient(addr)
    except (ConnectionError, RuntimeError) as e:
        raise SubmitError(f"cannot reach the Ray dashboard at {addr}: {one_line(e)}") from None
    finally:
        os.environ.update(hidden)


def one_line(error: BaseException) -> str:
    return " ".join((str(error).strip() or type(error).__name__).split())


def job_info(jobs, job_id: str, addr: str):
    """The job's details; an id the cluster does not know is a SubmitError."""
    try:
        return jobs.get_job_info(job_id)
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            raise SubmitError(f"no job {job_id} on the cluster at {addr} (ray job list --address {addr} lists "
                              f"them)") from None
        raise SubmitError(f"job {job_id} on {addr}: {one_line(e)}") from None


def check_overrides(stage: str, overrides: list[str]) -> None:
    """Compose conf/<stage>.yaml with the overrides, as the job will (only the composition: nothing runs)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
            cfg = compose(config_name=stage, overrides=overrides)
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise SubmitError(f"{stage} {shlex.join(overrides)}: {str(e).splitlines()[0]}") from None


def exit_code(info) -> int:
    from ray.job_submission import JobStatus

    if info.status == JobStatus.STOPPED:
        return EXIT_STOPPED
    if getattr(info, "driver_exit_code", None) is not None:
        return int(info.driver_exit_code)
    return 0 if info.status == JobStatus.SUCCEEDED else 1


def follow(jobs, job_id: str) -> int:
    """Print the job's logs as they come until it ends; Ctrl-C asks whether to stop it. -> the job's exit code."""
    from ray.job_submission import JobStatus

    async def tail():
        async for lines in jobs.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        answer = ask(f"\nstop job {job_id}? [y/N] ")
        if answer.strip().lower() in ("y", "yes"):
            jobs.stop_job(job_id)
            print(f"stopping {job_id}", file=sys.stderr)
        else:
            print(f"{job_id} keeps running: python -m cluster.submit logs {job_id} --follow", file=sys.stderr)
            return EXIT_STOPPED
    while (info := jobs.get_job_info(job_id)).status not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                              JobStatus.STOPPED):
        time.sleep(0.5)
    code = exit_code(info)
    print(f"job {job_id} {info.status.value.lower()} (exit code {code})"
          + (f": {reason(info)}" if reason(info) and code else ""), file=sys.stderr)
    return code


def reason(info) -> str:
    """Ray's message for the job, without the tail of its logs that Ray appends when the job failed (the logs were
    followed, or are one `logs <id>` away)."""
    return (info.message or "").split(", last available logs", 1)[0]


def ask(prompt: str) -> str:
    try:
        return input(prompt)
    except (EOFError, KeyboardInterrupt):
        return ""


def forwarded(names: list[str]) -> dict[str, str]:
    """{name: this shell's value} of the variables --env names (an unset one is an error: the job would lack it)."""
    unset = [name for name in names if name not in os.environ]
    if unset:
        raise SubmitError(f"--env {' '.join(unset)}: not set in this shell (export it, or drop --env)")
    return {name: os.environ[name] for name in names}


def submit(stage: str, overrides: list[str], *, addr: str, source: str, wait: bool, env: list[str] = ()) -> int:
    if stage not in stages():
        raise SubmitError(f"no stage {stage!r}; stages: {', '.join(stages())} (or: {', '.join(COMMANDS)} <id>)")
    check_overrides(stage, overrides)
    env_vars = forwarded(list(env))
    print(f"submitting to the Ray cluster at {addr} (from {source})", file=sys.stderr, flush=True)
    jobs = client(addr)
    entrypoint = shlex.join(["python", "-m", f"pipelines.{stage}", *overrides])
    # The job's runtime environment: its driver and every task, actor and replica it starts inherit it.
    job_id = jobs.submit_job(entrypoint=entrypoint,
                             runtime_env={"working_dir": str(ROOT), "excludes": EXCLUDES}
                             | ({"env_vars": env_vars} if env_vars else {}),
                             metadata={"stage": stage})
    print(f"submitted {job_id}: {entrypoint}", file=sys.stderr, flush=True)
    if not wait:
        print(job_id)
        return 0
    return follow(jobs, job_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.submit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", help=f"a stage ({', '.join(stages())}) or one of {', '.join(COMMANDS)}")
    parser.add_argument("args", nargs="*", help="the stage's Hydra overrides, or the submission id")
    parser.add_argument("--address", help="the dashboard's address; wins over RAY_API_SERVER_ADDRESS and RAY_ADDRESS "
                                          "(default: those, else http://127.0.0.1:8265)")
    parser.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    parser.add_argument("--follow", action="store_true", help="logs: follow until the job ends")
    parser.add_argument("--env", action="append", default=[], metavar="NAME",
                        help="pass this shell's NAME to the job and everything it starts (repeatable), e.g. "
                             "--env AWS_ACCESS_KEY_ID --env AWS_SECRET_ACCESS_KEY")
    args = parser.parse_args(argv)
    try:
        return run(parser, args)
    except SubmitError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


def run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    addr, source = address(args.address)
    if args.what not in COMMANDS:
        return submit(args.what, args.args, addr=addr, source=source, wait=not args.no_wait, env=args.env)
    if len(args.args) != 1:
        parser.error(f"{args.what} takes one submission id")
    jobs, job_id = client(addr), args.args[0]
    info = job_info(jobs, job_id, addr)
    if args.what == "status":
        print(f"{job_id}: {info.status.value}" + (f" ({reason(info)})" if reason(info) else ""))
        return 0
    if args.what == "stop":
        print(f"{job_id}: {'stopping' if jobs.stop_job(job_id) else 'already ended'}")
        return 0
    if args.follow:
        return follow(jobs, job_id)
    print(jobs.get_job_logs(job_id), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
