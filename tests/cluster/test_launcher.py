"""The cluster-launcher YAMLs (cluster/launcher/) are valid for `ray up`: checked against the schema that ships
inside the ray package (ray/autoscaler/ray-schema.json, Ray's own validate_config) and for what this project needs
from them: a CPU head, a GPU worker type, the repository synced and installed on every node."""

from __future__ import annotations

import copy

import pytest
import yaml

from tests_conf import ROOT

LAUNCHERS = sorted((ROOT / "cluster" / "launcher").glob("*.yaml"))


def validate(config: dict) -> None:
    from ray.autoscaler._private.util import validate_config

    config = copy.deepcopy(config)
    config.setdefault("cluster_synced_files", [])  # what `ray up` fills in before it validates
    validate_config(config)


def gpus(node_type: dict) -> int:
    node = node_type["node_config"]
    if "guestAccelerators" in node:
        return sum(a["acceleratorCount"] for a in node["guestAccelerators"])
    return int(node.get("InstanceType", "").split(".")[0].startswith(("g4", "g5", "g6", "p3", "p4", "p5")))


def test_there_is_a_launcher_for_aws_and_gcp():
    assert {p.stem for p in LAUNCHERS} >= {"aws", "gcp"}


@pytest.mark.parametrize("path", LAUNCHERS, ids=[p.name for p in LAUNCHERS])
def test_launcher_config_is_valid_for_ray_up(path):
    config = yaml.safe_load(path.read_text())
    validate(config)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and gpus(head) == 0  # the head runs drivers, not work
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert any(gpus(t) >= 1 and t["max_workers"] >= 1 for t in workers), "no GPU worker type"
    # The project is synced from the repository root and installed on every node.
    assert "." in config["file_mounts"].values()
    target = next(k for k, v in config["file_mounts"].items() if v == ".")
    assert any("pip install" in c and f"-e {target}" in c for c in config["setup_commands"])
    assert any(".venv" in e for e in config["rsync_exclude"]) and any("runs" in e for e in config["rsync_exclude"])


def test_a_broken_launcher_config_is_rejected():
    import jsonschema

    config = yaml.safe_load((ROOT / "cluster" / "launcher" / "aws.yaml").read_text())
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["max_wokers"] = 4  # a typo: unknown fields are refused
    with pytest.raises(jsonschema.ValidationError, match="max_wokers"):
        validate(broken)
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "cpu_head"  # names no node type
    with pytest.raises(ValueError, match="head_node_type. must be one of .available_node_types"):
        validate(broken)
