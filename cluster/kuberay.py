"""Offline checks of the KubeRay manifests in k8s/: what the API server, the KubeRay operator or this project would
refuse, found before `kubectl apply` (no cluster, no Docker; a RayService's check imports the serve app).

    python -m cluster.kuberay                                  # k8s/*.yaml and k8s/Dockerfile
    python -m cluster.kuberay k8s/ray-job.pretrain.yaml        # some files; exit status 1 on any error
    python -m cluster.kuberay --regenerate-schemas CRD_DIR     # k8s/schemas/*.json from KubeRay's CRD YAMLs

1. The CRD schema (cluster/crd_schema.py: k8s/schemas/<kind>.json, derived from KubeRay's CRDs), applied as the API
   server applies it: `admit` drops the nulls the schema does not allow and fills in defaults (a port of
   apiextensions-apiserver's defaulting), then JSON Schema validation where unknown fields are errors (kubectl's
   strict field validation) unless x-kubernetes-preserve-unknown-fields, int-or-string is `[integer, string]`,
   list-type set/map entries are unique, and the CEL rules that apply on create are hand translations (RULES).
   metadata is the API server's ObjectMeta with the operator's rule for names (a DNS-1035 label, short enough
   for the Services it derives from it).
2. What the schema cannot say: rayStartParams that `ray start` reads as numbers are numbers; GPU requests equal
   limits; every Ray container runs the project image (the -gpu one where it takes GPUs) at the Dockerfile's
   version and Ray version, and gets object-storage credentials from a Secret; a RayJob's entry point is
   `python -m pipelines.<stage> overrides...` for a stage of this project whose overrides compose with Hydra,
   whose storage paths are URIs, whose GPUs the cluster starts with, and whose cluster is deleted after it; a
   RayService's serveConfigV2 is YAML that builds this project's chat app (`pipelines.serve.app:build`, args
   composed by `config_from_args`) from a checkpoint URI.
3. The Dockerfile (`check_dockerfile`): the Ray base images, the torch wheel of each flavour, the project
   installed, its version label that of pyproject.toml.

Regenerating the schemas for another KubeRay release: point --regenerate-schemas at the release's
ray-operator/config/crd/bases/ and set KUBERAY_VERSION (cluster/crd_schema.py); a new CEL rule stops it until RULES
translates it.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
import sys
import tomllib
from fractions import Fraction
from pathlib import Path

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cluster.crd_schema import KINDS, KUBERAY_VERSION, admit, regenerate_schemas, schema, schema_errors

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
CONF = ROOT / "conf"
SERVE_BUILDER = "pipelines.serve.app:build"
# Settings that name files every pod must reach: on Kubernetes, URIs of shared storage.
STORAGE_KEYS = ("data.root", "run.root", "init_from", "shards", "checkpoint", "tokenizer.path", "align.reward_model",
                "rankings_eval_path", "data.paths", "align.prompts.paths")
CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# What a config that does not compose raises (the project's ConfigError is a ValueError).
CONFIG_ERRORS = (ValueError, HydraException, OmegaConfBaseException)
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# rayStartParams that `ray start` reads as numbers (the schema says only: strings).
NUMERIC_START_PARAMS = ("num-cpus", "num-gpus", "memory", "object-store-memory")

# ---- the project: Dockerfile and pyproject.toml ----

def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(word.upper(), rest.strip()) for word, _, rest in
            (line.strip().partition(" ") for line in joined.splitlines() if line.strip())]


@functools.cache
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def dockerfile_facts(text: str) -> dict:
    """What k8s/Dockerfile declares: {stage alias: base image}, the final FROM, LABELs, ENV per stage, RUNs, COPYs."""
    facts = {"bases": {}, "final": None, "labels": {}, "env": {}, "run": [], "copy": [], "args": {}}
    stage = None
    for word, rest in _instructions(text):
        if word == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+as\s+(\S+))?", rest, flags=re.I)
            image, alias = match[1], match[2]
            facts["bases"][alias or image] = image
            facts["final"], stage = image, alias or image
        elif word == "ARG" and not facts["bases"]:  # global ARGs, before the first FROM
            name, _, value = rest.partition("=")
            facts["args"][name] = value
        elif word in ("LABEL", "ENV"):
            pairs = dict(re.findall(r'(\S+?)=("[^"]*"|\S*)', rest))
            pairs = {k: v.strip('"') for k, v in pairs.items()}
            if word == "LABEL":
                facts["labels"] |= pairs
            else:
                facts["env"].setdefault(stage, {}).update(pairs)
        elif word in ("RUN", "COPY"):
            facts[word.lower()].append(rest)
    return facts


def check_dockerfile(text: str) -> list[str]:
    """The image build's promises, read statically: Ray base images (CPU and CUDA, chosen by FLAVOR) at the Ray
    version pyproject.toml pins, the torch wheel each flavour needs, the project installed, its version label."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    facts, errors, project = dockerfile_facts(text), [], pyproject()
    bases = {alias: re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)(-gpu)?", image or "")
             for alias, image in facts["bases"].items()}
    for alias, gpu in (("base-cpu", None), ("base-gpu", "-gpu")):
        match = bases.get(alias)
        if not match or match[4] != gpu:
            errors.append(f"stage {alias} must start FROM rayproject/ray:<ray version>-py3XX{gpu or ''}")
    if errors:
        return errors
    ray = sorted({bases[a][1] for a in ("base-cpu", "base-gpu")})
    python = sorted({f"{bases[a][2]}.{bases[a][3]}" for a in ("base-cpu", "base-gpu")})
    ray_pin = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "ray")
    if len(ray) > 1 or not ray_pin.specifier.contains(ray[0]):
        errors.append(f"the base images' Ray {' and '.join(ray)} must be one release within pyproject's {ray_pin}")
    if len(python) > 1 or not SpecifierSet(project["requires-python"]).contains(python[0]):
        errors.append(f"the base images' Python {' and '.join(python)} must be one version within pyproject's "
                      f"requires-python {project['requires-python']}")
    if facts["final"] != "base-${FLAVOR}" or facts["args"].get("FLAVOR") != "cpu":
        errors.append("the image must be built FROM base-${FLAVOR}, with ARG FLAVOR=cpu before the first FROM")
    index = {alias: facts["env"].get(alias, {}).get("LMLIFE_TORCH_INDEX") for alias in ("base-cpu", "base-gpu")}
    if index["base-cpu"] != CPU_TORCH_INDEX or index["base-gpu"] == CPU_TORCH_INDEX:
        errors.append(f"LMLIFE_TORCH_INDEX must be {CPU_TORCH_INDEX} in base-cpu (the CPU wheel) and not in base-gpu "
                      f"(PyPI's default wheel is the CUDA one), got {index}")
    if not any("pip install" in run and "LMLIFE_TORCH_INDEX" in run and "TORCH_SPEC" in run for run in facts["run"]):
        errors.append("no RUN installs torch (${TORCH_SPEC}) from ${LMLIFE_TORCH_INDEX}")
    if not any(re.search(r"pip install\b.*\s(-e\s+)?\.(\s|$)", run) for run in facts["run"]):
        errors.append("no RUN installs the project (pip install -e .)")
    if not any(re.search(r"(^|\s)conf(\s|/|$)", copy_) for copy_ in facts["copy"]):
        errors.append("conf/ is not copied into the image: every stage composes its config from it")
    labels = facts["labels"]
    if (labels.get("org.opencontainers.image.title"), labels.get("org.opencontainers.image.version")) != (
            project["name"], project["version"]):
        errors.append(f"LABEL org.opencontainers.image.title/version must be {project['name']} {project['version']} "
                      f"(pyproject.toml), got {labels.get('org.opencontainers.image.title')} "
                      f"{labels.get('org.opencontainers.image.version')}")
    return errors


@functools.cache
def image() -> dict:
    """The project image's tags and Ray version, from k8s/Dockerfile: {"cpu": ..., "gpu": ..., "ray": ...}."""
    facts = dockerfile_facts((K8S / "Dockerfile").read_text())
    name = facts["labels"].get("org.opencontainers.image.title")
    version = facts["labels"].get("org.opencontainers.image.version")
    ray = re.search(r":(\d+\.\d+\.\d+)-", facts["bases"].get("base-cpu") or "")
    return {"cpu": f"{name}:{version}", "gpu": f"{name}:{version}-gpu", "ray": ray[1] if ray else None}


# ---- checks beyond the schema ----

def _whole(value) -> int | None:
    """A count of GPUs ("1", 2); None if it is not a whole number (Kubernetes hands out devices whole)."""
    return int(value) if re.fullmatch(r"\d+", str(value).strip()) else None


def _cluster(obj: dict) -> tuple[str, dict | None]:
    """(path, RayCluster spec) of a RayCluster, a RayJob's rayClusterSpec or a RayService's rayClusterConfig."""
    key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}[obj["kind"]]
    return (f"spec.{key}", obj["spec"].get(key)) if key else ("spec", obj["spec"])


def _groups(prefix: str, cluster: dict) -> list[tuple[str, dict]]:
    """(path, group) for the head group and each worker group."""
    groups = [(f"{prefix}.headGroupSpec", cluster["headGroupSpec"])]
    return groups + [(f"{prefix}.workerGroupSpecs[{i}]", g) for i, g in enumerate(cluster.get("workerGroupSpecs", []))]


def _ray_container(group: dict) -> dict:
    return (group["template"]["spec"]["containers"] or [{}])[0]  # KubeRay's Ray container is the first


def _pod_gpus(group: dict) -> int:
    """The GPUs Ray sees on a pod of the group: rayStartParams' num-gpus, else the Ray container's GPU limits."""
    if re.fullmatch(r"\d+", group.get("rayStartParams", {}).get("num-gpus", "")):
        return int(group["rayStartParams"]["num-gpus"])
    limits = _ray_container(group).get("resources", {}).get("limits", {})
    return sum(_whole(v) or 0 for k, v in limits.items() if k.endswith("/gpu"))


def pod_errors(obj: dict) -> list[str]:
    """The Ray version, and per group: numbers in rayStartParams, GPU requests equal to limits, the project image
    in the Ray container (the -gpu one if it takes GPUs), storage credentials from a Secret."""
    prefix, cluster = _cluster(obj)
    if cluster is None:
        return []
    tags = image()
    errors = [] if cluster.get("rayVersion") == tags["ray"] else [
        f"{prefix}.rayVersion must be {tags['ray']!r}, the Ray of k8s/Dockerfile's base images"]
    for where, group in _groups(prefix, cluster):
        errors += [f"{where}.rayStartParams.{key}: {value!r} is not a number (ray start --{key} takes one)"
                   for key, value in group.get("rayStartParams", {}).items()
                   if key in NUMERIC_START_PARAMS and not re.fullmatch(r"\d+(\.\d+)?", value)]
        if not group["template"]["spec"]["containers"]:
            errors.append(f"{where}.template.spec.containers: empty (the operator needs the Ray container first)")
            continue
        for i, container in enumerate(group["template"]["spec"]["containers"]):
            requests, limits = (container.get("resources", {}).get(of, {}) for of in ("requests", "limits"))
            errors += [f"{where}.template.spec.containers[{i}].resources: {name} requests {requests.get(name)} != "
                       f"limits {limits.get(name)}: Kubernetes needs GPU requests equal to limits, in whole GPUs"
                       for name in sorted({*requests, *limits}) if name.endswith("/gpu") and (
                           _whole(limits.get(name)) is None or _whole(requests.get(name, limits[name])) != _whole(
                               limits[name]))]
        errors += _ray_container_errors(f"{where}.template.spec.containers[0]", _ray_container(group),
                                        gpu=bool(_pod_gpus(group)), tags=tags)
    return errors


def _ray_container_errors(at: str, ray: dict, *, gpu: bool, tags: dict) -> list[str]:
    errors = []
    name = str(ray.get("image")).rsplit("/", 1)[-1]  # from any registry
    if name not in ((tags["gpu"],) if gpu else (tags["cpu"], tags["gpu"])):
        wanted = f"{tags['gpu']} (it takes GPUs)" if gpu else f"{tags['cpu']} or {tags['gpu']}"
        errors.append(f"{at}.image is {ray.get('image')!r}: the Ray container runs the project image, {wanted}")
    errors += [f"{at}.env: {e['name']} has a literal value: credentials come from a Secret (valueFrom)"
               for e in ray.get("env", []) if e["name"] in CREDENTIALS and "value" in e]
    from_secret = {e["name"] for e in ray.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    if not any("secretRef" in source for source in ray.get("envFrom", [])) and not {
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= from_secret:
        errors.append(f"{at}: no object-storage credentials from a Secret (envFrom: secretRef, or env valueFrom: "
                      f"secretKeyRef for AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    return errors


def gpu_errors(needed: Fraction, *, per_pod: Fraction, at_start: bool, cluster: dict, what: str) -> list[str]:
    """`needed` GPUs (in pieces of `per_pod` on one pod) fit the cluster: when it starts (a stage looks for its GPUs
    before it asks Ray for them, so the autoscaler is never asked) or at its largest (Ray Serve asks by itself)."""
    groups = [(cluster["headGroupSpec"], 1, 1)] + [
        (g, max(g["minReplicas"], min(g["replicas"], g["maxReplicas"])), g["maxReplicas"])
        for g in cluster.get("workerGroupSpecs", [])]
    hosts = [(_pod_gpus(g), start * g.get("numOfHosts", 1), most * g.get("numOfHosts", 1)) for g, start, most in groups]
    start, most = sum(gpus * n for gpus, n, _ in hosts), sum(gpus * n for gpus, _, n in hosts)
    biggest = max(gpus for gpus, _, _ in hosts)
    if per_pod > biggest:
        return [f"{what} needs {_num(per_pod)} GPUs on one pod; the largest pod has {_num(biggest)}"]
    if at_start and needed > start:
        return [f"{what} needs {_num(needed)} GPUs but the cluster starts with {_num(start)} (replicas/minReplicas of "
                f"its worker groups): the stage looks for its GPUs before it asks Ray for them, so the autoscaler "
                f"would not add them"]
    if needed > most:
        return [f"{what} needs {_num(needed)} GPUs but the cluster grows to {_num(most)} at most (maxReplicas)"]
    return []


def _num(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):g}"


def storage_errors(cfg, where: str) -> list[str]:
    """Every path setting of a composed config is a URI of shared storage: each pod has its own disk."""
    errors = []
    for key in STORAGE_KEYS:
        value = OmegaConf.select(cfg, key, default=None)  # None too when unset (???) or not in this stage's config
        if value is None:
            continue
        for path in (value if OmegaConf.is_list(value) else [value]):
            match = re.match(r"([a-z][a-z0-9+.-]*)://", str(path))
            if not match or match[1] == "file":
                errors.append(f"{where}: {key}={path} is a local path, which each pod resolves on its own disk: use "
                              f"a URI of storage every pod reaches (s3://, gs://, ...)")
    return errors


def entrypoint(text: str) -> tuple[str, list[str]]:
    """(stage, Hydra overrides) of `python -m pipelines.<stage> overrides...`; ValueError if it is not one."""
    words = shlex.split(text)
    if len(words) < 3 or words[0] not in ("python", "python3") or words[1] != "-m":
        raise ValueError(f"{text!r} is not `python -m pipelines.<stage> overrides...`")
    package, _, stage = words[2].partition(".")
    module = ROOT / package / stage
    if package != "pipelines" or not (module.with_suffix(".py").is_file() or (module / "__main__.py").is_file()):
        raise ValueError(f"{words[2]}: no such stage module in this project (pipelines/<stage>.py or "
                         f"pipelines/<stage>/__main__.py)")
    if not (CONF / f"{stage}.yaml").is_file():
        raise ValueError(f"{words[2]} is not a Hydra stage: there is no conf/{stage}.yaml")
    flags = [w for w in words[3:] if w.startswith("-")]
    if flags:
        raise ValueError(f"{flags}: only key=value overrides are checked (no Hydra flags)")
    return stage, words[3:]


def compose(stage: str, overrides: list[str]):
    """The config `python -m pipelines.<stage> overrides...` would run with, resolved (Hydra's compose API)."""
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = hydra_compose(config_name=stage, overrides=overrides)
    OmegaConf.to_container(cfg, resolve=True)  # interpolations resolve
    missing = [key for key in cfg if OmegaConf.is_missing(cfg, key)]
    if missing:
        raise ValueError(f"conf/{stage}.yaml needs {', '.join(f'{k}=' for k in missing)}")
    return cfg


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split("Config search path")[0].split())  # Hydra's search path says nothing here


def rayjob_errors(obj: dict) -> list[str]:
    """The entry point runs a stage of this project with overrides that compose, storage URIs and GPUs the job's
    cluster has; that cluster is deleted when the job ends."""
    spec, errors = obj["spec"], []
    if "rayClusterSpec" in spec and not spec.get("shutdownAfterJobFinishes"):
        errors.append("spec.shutdownAfterJobFinishes must be true: the job's own cluster (GPU nodes too) would "
                      "outlive the job")
    if not spec.get("entrypoint"):
        return errors + ["spec.entrypoint: missing (python -m pipelines.<stage> overrides...)"]
    try:
        stage, overrides = entrypoint(spec["entrypoint"])
        cfg = compose(stage, overrides)
    except CONFIG_ERRORS as error:
        return errors + [f"spec.entrypoint: {_one_line(error)}"]
    errors += storage_errors(cfg, "spec.entrypoint")
    trainer = cfg.get("trainer")
    if trainer is not None and trainer.use_gpu and "rayClusterSpec" in spec:
        errors += gpu_errors(Fraction(trainer.num_workers), per_pod=Fraction(1), at_start=True,
                             cluster=spec["rayClusterSpec"], what=f"trainer.num_workers={trainer.num_workers} x 1 GPU")
    return errors


def rayservice_errors(obj: dict) -> list[str]:
    """serveConfigV2 is YAML whose applications build this project's chat app from args that compose."""
    try:
        config = yaml.safe_load(obj["spec"].get("serveConfigV2") or "")
    except yaml.YAMLError as error:
        return [f"spec.serveConfigV2 is not YAML: {' '.join(str(error).split())}"]
    apps = config.get("applications") if isinstance(config, dict) else None
    if not isinstance(apps, list) or not apps or not all(isinstance(app, dict) for app in apps):
        return ["spec.serveConfigV2: no `applications:` list of applications"]
    errors = []
    for i, app in enumerate(apps):
        where = f"spec.serveConfigV2: applications[{i}]"
        if app.get("import_path") != SERVE_BUILDER:
            errors.append(f"{where}.import_path is {app.get('import_path')!r}: this project's app is {SERVE_BUILDER}")
            continue
        from pipelines.serve.app import ChatServer, ModelServer, config_from_args, refuse_proxy_settings

        try:
            if not isinstance(app.get("args") or {}, dict):
                raise ValueError("not a mapping of conf/serve.yaml keys")
            refuse_proxy_settings(app.get("args") or {})  # as the builder will
            cfg = config_from_args(app.get("args") or {})
        except CONFIG_ERRORS as error:
            errors.append(f"{where}.args: {_one_line(error)}")
            continue
        errors += storage_errors(cfg, f"{where}.args")
        names = {ChatServer.name, ModelServer.name}
        errors += [f"{where}.deployments: no deployment {d.get('name')!r} in the app (it has {sorted(names)})"
                   for d in app.get("deployments", []) if d.get("name") not in names]
        serve = cfg.serve
        autoscaling = serve.autoscaling_config
        replicas = max(1, autoscaling.get("min_replicas", 1)) if autoscaling else serve.num_replicas
        if serve.num_gpus:
            errors += gpu_errors(Fraction(str(serve.num_gpus)) * replicas, per_pod=Fraction(str(serve.num_gpus)),
                                 at_start=False, cluster=obj["spec"]["rayClusterConfig"],
                                 what=f"{where}: {replicas} model replicas x serve.num_gpus={serve.num_gpus}")
    return errors


def check(doc) -> list[str]:
    """Every error of one manifest document (empty: it would be accepted and run)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        return ["not a Kubernetes object (a mapping with apiVersion and kind)"]
    if doc["kind"] not in KINDS:
        if str(doc.get("apiVersion", "")).startswith("ray.io/"):
            return [f"kind {doc['kind']!r} is not a KubeRay kind ({', '.join(KINDS)})"]
        return []  # another kind (a Secret, a ConfigMap): not ours to check
    obj = admit(doc, schema(doc["kind"]))
    errors = schema_errors(obj)
    if errors:
        return errors  # the checks below read a well-formed object
    errors = pod_errors(obj)
    if obj["kind"] == "RayJob":
        errors += rayjob_errors(obj)
    elif obj["kind"] == "RayService":
        errors += rayservice_errors(obj)
    return errors


def validate(path) -> list[str]:
    """Errors of a manifest file (every document in it) or of the Dockerfile, as `file: [kind/name: ]error`."""
    path = Path(path)
    if path.name == "Dockerfile":
        return [f"{path}: {e}" for e in check_dockerfile(path.read_text())]
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as error:
        return [f"{path}: not YAML: {' '.join(str(error).split())}"]
    errors = []
    for doc in docs:
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}: " if isinstance(doc, dict) else ""
        errors += [f"{path}: {name}{e}" for e in check(doc)]
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.kuberay", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="manifests or the Dockerfile (default: k8s/*.yaml, "
                                                             "k8s/Dockerfile)")
    parser.add_argument("--regenerate-schemas", metavar="CRD_DIR", type=Path,
                        help=f"write k8s/schemas/*.json from the KubeRay {KUBERAY_VERSION} CRD YAMLs in CRD_DIR")
    args = parser.parse_args(argv)
    if args.regenerate_schemas:
        for path in regenerate_schemas(args.regenerate_schemas):
            print(f"wrote {path}")
        return 0
    files = args.files or [*sorted(K8S.glob("*.yaml")), K8S / "Dockerfile"]
    errors = [error for path in files for error in validate(path)]
    print("\n".join(errors) or f"{len(files)} files: ok")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
