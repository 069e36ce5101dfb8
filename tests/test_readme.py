"""README.md tells the truth: every `python -m pipelines.<module> ...` it prints composes as printed, and every
repository path it names exists.

Hydra stages are run with `--cfg job --resolve` (the composed config is printed; nothing runs, no Ray, no data),
multirun commands (`-m`) with their first value of each sweep; `pipelines.corpus` and `pipelines.report` (argparse)
with `--help`.
Placeholders such as `<run>` or `DIR` become a dummy value. The subprocesses start together on a small pool
(each costs seconds of imports) and each test waits for its own.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from tests_conf import ROOT

README = (ROOT / "README.md").read_text()
ARGPARSE_MODULES = {"pipelines.corpus", "pipelines.report"}
SHELL_OPERATORS = {"&&", "||", "|", ";", "&", ">", ">>", "<"}
# Gitignored outputs a README may name (`data/`, `runs/`): not part of the repository.
GENERATED = {"data", "runs", "outputs", "multirun", "checkpoints", "wandb"}
DUMMY = "x"


def shell_lines(text: str) -> list[str]:
    """Every command-like piece of the README: code-block lines (with `\\` continuations joined) and inline
    backtick spans."""
    lines: list[str] = []
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    for block in blocks:
        lines += re.sub(r"\\\n\s*", " ", block).splitlines()
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    lines += re.findall(r"`([^`\n]+)`", prose)
    return lines


def readme_commands(text: str = README) -> list[list[str]]:
    """argv lists (from `python` on) of the `python -m pipelines.<module>` commands, in order, without repeats
    (nor commands checked the same way: `python -m pipelines.corpus` and `... --out DIR` are both `--help`)."""
    commands, seen = [], set()
    for line in shell_lines(text):
        if "python -m pipelines." not in line:
            continue
        # The part after `--` of `ray job submit ... -- python -m ...`, or after env assignments: from `python` on.
        line = line[line.index("python -m pipelines."):]
        try:
            argv = shlex.split(line, comments=True)
        except ValueError as error:  # unbalanced quotes: a README bug worth failing on
            raise AssertionError(f"README command does not parse as shell: {line!r}: {error}") from None
        for i, token in enumerate(argv):
            if token in SHELL_OPERATORS:
                argv = argv[:i]
                break
        if tuple(check_argv(argv)) not in seen:
            seen.add(tuple(check_argv(argv)))
            commands.append(argv)
    return commands


def split_sweep(value: str) -> list[str]:
    """Hydra's comma-separated sweep values; commas inside brackets, braces, parentheses or quotes stay."""
    parts, depth, quote, current = [], 0, None, ""
    for ch in value:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += ch
    return [*parts, current]


def replace_placeholders(arg: str) -> str:
    """`checkpoint=runs/pretrain/<run>` -> `checkpoint=runs/pretrain/x`; `shards=DIR` -> `shards=x`."""
    arg = re.sub(r"<[^<>]+>", DUMMY, arg)
    key, sep, value = arg.partition("=")
    if sep and re.fullmatch(r"[A-Z][A-Z_]*", value):
        return f"{key}={DUMMY}"
    return arg


def check_argv(argv: list[str]) -> list[str]:
    """The subprocess argv that checks a README command without running it."""
    assert argv[:2] == ["python", "-m"] and len(argv) > 2, argv
    module, args = argv[2], [replace_placeholders(a) for a in argv[3:]]
    if module in ARGPARSE_MODULES:
        return [sys.executable, "-m", module, "--help"]
    if "-m" in args or "--multirun" in args:
        args = [a for a in args if a not in ("-m", "--multirun")]
        args = [f"{k}={split_sweep(v)[0]}" if sep else k for k, sep, v in (a.partition("=") for a in args)]
    return [sys.executable, "-m", module, *args, "--cfg", "job", "--resolve"]


COMMANDS = readme_commands()


def run(argv: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # `${oc.env:NAME}` settings (credentials kept off the command line) resolve from the environment: give them one.
    env |= {name: DUMMY for arg in argv for name in re.findall(r"\$\{oc\.env:(\w+)\}", arg) if name not in env}
    return subprocess.run(check_argv(argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def command_results():
    """Every README command's check, started at once on two workers: {command line: future}."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {shlex.join(argv): pool.submit(run, argv) for argv in COMMANDS}


def test_readme_has_stage_commands():
    modules = {argv[2] for argv in COMMANDS}
    assert {"pipelines.corpus", "pipelines.data", "pipelines.pretrain", "pipelines.evaluate",
            "pipelines.lifecycle"} <= modules, modules


@pytest.mark.parametrize("command", [shlex.join(argv) for argv in COMMANDS],
                         ids=[" ".join(argv) for argv in COMMANDS])
def test_readme_command_composes(command_results, command):
    future: Future = command_results[command]
    done = future.result()
    assert done.returncode == 0, (f"{command}\n  checked as: {shlex.join(done.args)}\n"
                                  f"{done.stdout[-2000:]}{done.stderr[-4000:]}")


def repo_top_level() -> set[str]:
    return {p.name for p in ROOT.iterdir()
            if not p.name.startswith(".") and p.name not in GENERATED and not p.name.endswith(".egg-info")}


def readme_paths(text: str = README) -> list[str]:
    """Tokens that name a repository path: start with a top-level folder (`conf/...`) or file (`Makefile`)."""
    tops = repo_top_level()
    found = []
    for token in re.findall(r"(?<![\w./=-])[\w.-]+(?:/[\w.-]*)*", text):
        head = token.split("/")[0]
        if head not in tops or ("/" not in token and not (ROOT / head).is_file()):
            continue  # `models` the word, `conf` the word: only `conf/...` or a top-level file name
        found.append(token.rstrip("."))
    return sorted(set(found))


def test_readme_names_repo_paths():
    paths = readme_paths()
    assert any(p.startswith("pipelines/") for p in paths), paths  # the extraction still finds something
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"README.md names paths that do not exist: {missing}"


def layout_folders(text: str = README) -> list[str]:
    section = text.split("## Layout", 1)[1]
    block = re.search(r"```[^\n]*\n(.*?)```", section, flags=re.S).group(1)
    return [line.split()[0] for line in block.splitlines() if line and not line[0].isspace()]


def test_readme_layout_folders_exist():
    folders = layout_folders()
    assert folders, "no Layout block in README.md"
    missing = [f for f in folders if not (ROOT / f).is_dir()]
    assert not missing, f"README.md's Layout lists folders that do not exist: {missing}"


def test_readme_names_every_config_and_group():
    """The Configuration section names every top-level config and every group with its options (it once named 4 of
    8 and neither conf/algorithm/ nor conf/finetune/)."""
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    conf = ROOT / "conf"
    missing = [f"conf/{f.name}" for f in conf.glob("*.yaml") if f"conf/{f.name}" not in section]
    for group in (g for g in conf.iterdir() if g.is_dir()):
        if f"conf/{group.name}/" not in section:
            missing.append(f"conf/{group.name}/")
        missing += [f"conf/{group.name}/{o.stem}" for o in group.glob("*.yaml")
                    if not re.search(rf"\b{re.escape(o.stem)}\b", section)]
    assert not missing, f"README.md's Configuration section does not name: {missing}"
