"""Paths that may be local directories or URIs (s3://, gs://, ...): one pyarrow filesystem API for all of them.

Every stage keeps data, tokenizers, shards and checkpoints through these helpers, so a multi-node cluster can point
them at shared storage by config alone. Relative local paths are made absolute against the launch directory
(Ray workers run elsewhere and must never see a relative path).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import tempfile
from typing import Iterable

import pyarrow.fs as pafs

from pipelines.errors import ConfigError, MissingPathError


def is_uri(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """A URI unchanged; a local path made absolute."""
    return path if is_uri(path) else os.path.abspath(os.path.expanduser(path))


def in_ray_job() -> bool:
    """Whether this process is the driver of a `ray job submit` job (the job supervisor sets this variable)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def root(path: str, setting: str) -> str:
    """A storage root (`data.root`, `run.root`) made absolute. Inside a Ray job a relative root would resolve
    into the job's temporary copy of the working directory, deleted with it: refuse it and say what to set."""
    if in_ray_job() and not is_uri(path) and not os.path.isabs(os.path.expanduser(path)):
        raise ConfigError(f"{setting}={path} is relative, and inside a Ray job it would land in the job's temporary "
                          f"working directory ({os.getcwd()}) and be lost: set {setting}= to an absolute path or a "
                          f"URI every node can reach (e.g. {setting}=/mnt/shared/lmlife or s3://bucket/lmlife)")
    return absolute(path)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or URI."""
    return pafs.FileSystem.from_uri(absolute(path))


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def file_size(path: str) -> int:
    fs, p = filesystem(path)
    return fs.get_file_info(p).size


def read_bytes(path: str) -> bytes:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as f:
        return f.readall()


def write_bytes(path: str, data: bytes) -> None:
    """Write through a temporary name then move, so a crash never leaves a half-written file under `path`."""
    fs, p = filesystem(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    tmp = p + ".tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, p)


def read_json(path: str) -> dict:
    return json.loads(read_bytes(path))


def write_json(path: str, obj: dict) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def delete_dir(path: str) -> None:
    fs, p = filesystem(path)
    if fs.get_file_info(p).type != pafs.FileType.NotFound:
        fs.delete_dir(p)


def list_dir(path: str) -> list[str]:
    """The names in directory `path` (local or URI), sorted."""
    fs, p = filesystem(path)
    return sorted(info.base_name for info in fs.get_file_info(pafs.FileSelector(p)))


def expand(paths: Iterable[str], *, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Files named by `paths` (files, directories searched recursively, or `*` globs in the last part), sorted.

    A path that names nothing raises MissingPathError (a FileNotFoundError) naming it; hidden files (.name, _name) are skipped.
    """
    files: list[str] = []
    for raw in paths:
        path = absolute(str(raw))
        fs, p = filesystem(path)
        prefix = path[: len(path) - len(p)] if is_uri(path) else ""
        if any(ch in p for ch in "*?["):
            parent, pattern = p.rsplit("/", 1)
            infos = [i for i in fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
                     if fnmatch.fnmatch(i.base_name, pattern) and i.type == pafs.FileType.File]
        else:
            info = fs.get_file_info(p)
            if info.type == pafs.FileType.NotFound:
                raise MissingPathError(f"corpus path not found: {raw} (data.paths)")
            infos = [info] if info.type == pafs.FileType.File else [
                i for i in fs.get_file_info(pafs.FileSelector(p, recursive=True)) if i.type == pafs.FileType.File]
        found = sorted(prefix + i.path for i in infos if not i.base_name.startswith((".", "_"))
                       and (not suffixes or i.base_name.endswith(suffixes) or i.path == p))
        if not found:
            raise MissingPathError(f"no corpus files under {raw}" + (f" (looked for {suffixes})" if suffixes else ""))
        files += found
    return files


def fingerprint(files: list[str]) -> str:
    """A hash of the files' names, sizes and modification times: changes when the input changes."""
    h = hashlib.sha256()
    for path in files:
        fs, p = filesystem(path)
        info = fs.get_file_info(p)
        h.update(f"{path}\0{info.size}\0{info.mtime_ns}\n".encode())
    return h.hexdigest()


def config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def local_dir(path: str):
    """A local directory with the contents of `path`: itself when local, a temporary download for a URI."""
    if not is_uri(path):
        yield absolute(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        fs, p = filesystem(path)
        pafs.copy_files(p, tmp, source_filesystem=fs)
        yield tmp


def upload_dir(local: str, target: str) -> None:
    """Copy a local directory to `target` (a local path or URI)."""
    fs, p = filesystem(target)
    fs.create_dir(p, recursive=True)
    pafs.copy_files(local, p, destination_filesystem=fs)


def read_jsonl(path: str, limit: int | None = None) -> list[dict]:
    """The JSON objects of a jsonl file (local or URI), blank lines skipped; the first `limit` when given."""
    lines = read_bytes(path).decode().splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    return items[:limit] if limit else items
