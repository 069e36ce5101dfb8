"""k8s/: every manifest passes the KubeRay v1.7.0 CRD schemas (as the API server applies them) and the project's
checks (cluster/crd_schema.py, cluster/kuberay.py), and a broken copy fails each check with its own error. No Ray, no
cluster, no Docker."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from cluster import crd_schema, kuberay

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
STAGES = ["pretrain", "finetune", "sweep", "align", "lifecycle"]
MANIFESTS = ["ray-cluster.gpu.yaml", *(f"ray-job.{stage}.yaml" for stage in STAGES), "ray-service.chat.yaml"]


def load(name: str) -> dict:
    """A fresh copy of a manifest, to break."""
    return yaml.safe_load((K8S / name).read_text())


def only_error(doc: dict) -> str:
    """The one error `doc` has (a broken copy must fail for what was broken, and for nothing else)."""
    errors = kuberay.check(doc)
    assert len(errors) == 1, errors
    return errors[0]


def serve_app(doc: dict) -> dict:
    return yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"][0]


def with_serve_app(doc: dict, app: dict) -> dict:
    doc["spec"]["serveConfigV2"] = yaml.safe_dump({"applications": [app]})
    return doc


# ---- the manifests as written ----

def test_k8s_holds_the_manifests_and_image():
    assert sorted(p.name for p in K8S.glob("*.yaml")) == sorted(MANIFESTS)
    assert (K8S / "Dockerfile").is_file()
    assert sorted(p.name for p in (K8S / "schemas").glob("*.json")) == ["raycluster.json", "rayjob.json",
                                                                         "rayservice.json"]


@pytest.mark.parametrize("name", [*MANIFESTS, "Dockerfile"])
def test_file_is_valid(name):
    assert kuberay.validate(K8S / name) == []


@pytest.mark.parametrize("stage", STAGES)
def test_each_rayjob_runs_its_stage_on_shared_storage(stage):
    doc = load(f"ray-job.{stage}.yaml")
    assert doc["kind"] == "RayJob" and doc["spec"]["shutdownAfterJobFinishes"] is True
    assert doc["spec"]["ttlSecondsAfterFinished"] > 0
    name, overrides = kuberay.entrypoint(doc["spec"]["entrypoint"])
    assert name == stage
    cfg = kuberay.compose(stage, overrides)
    assert cfg.data.root == "s3://lmlife/data" and cfg.run.root == "s3://lmlife/runs"


def test_the_chain_of_runs_ends_at_the_served_checkpoint():
    """pretrain -> finetune -> align -> the RayService: each starts from the run the one before writes."""
    cfgs = {stage: kuberay.compose(*kuberay.entrypoint(load(f"ray-job.{stage}.yaml")["spec"]["entrypoint"]))
            for stage in ("pretrain", "finetune", "sweep", "align")}
    runs = {stage: f"{cfg.run.root}/{stage}/{cfg.run.name}" for stage, cfg in cfgs.items()}
    assert cfgs["finetune"].init_from == cfgs["sweep"].init_from == runs["pretrain"]
    assert cfgs["align"].init_from == runs["finetune"]
    served = serve_app(load("ray-service.chat.yaml"))["args"]["checkpoint"]
    assert served == runs["align"] == "s3://lmlife/runs/align/demo"


def test_every_manifest_names_the_dockerfiles_image():
    tags = kuberay.image()
    version = kuberay.pyproject()["version"]
    assert tags == {"cpu": f"lmlife:{version}", "gpu": f"lmlife:{version}-gpu", "ray": "2.60.0"}
    for name in MANIFESTS:
        text = (K8S / name).read_text()
        assert f'rayVersion: "{tags["ray"]}"' in text
        images = {line.split("image:")[1].strip() for line in text.splitlines() if line.strip().startswith("image:")}
        assert images and images <= {tags["cpu"], tags["gpu"]}, (name, images)


def test_command_line_reports_errors_with_file_and_status(tmp_path):
    doc = load("ray-cluster.gpu.yaml")
    doc["spec"]["headGroupSpec"]["rayStartParam"] = {}
    broken = tmp_path / "ray-cluster.broken.yaml"
    broken.write_text(yaml.safe_dump(doc))
    run = subprocess.run([sys.executable, "-m", "cluster.kuberay", str(K8S / "ray-cluster.gpu.yaml"), str(broken)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stdout.strip() == (f"{broken}: RayCluster/lmlife-gpu: spec.headGroupSpec: unknown field "
                                  f"'rayStartParam'")


# ---- the schemas: derived from the CRDs as the API server applies them ----

def crd(kind: str, spec: dict, required: list[str] | None = None) -> dict:
    """A CustomResourceDefinition in the shape controller-gen writes, with `spec` as its spec schema."""
    root = {"type": "object", "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                             "metadata": {"type": "object"},
                                             "spec": {"type": "object", "properties": spec, **(
                                                 {"required": required} if required else {})}}}
    return {"metadata": {"name": f"{kind.lower()}s.ray.io"},
            "spec": {"group": "ray.io", "names": {"kind": kind},
                     "versions": [{"name": "v1alpha1", "storage": False, "schema": {"openAPIV3Schema": {}}},
                                  {"name": "v1", "storage": True, "schema": {"openAPIV3Schema": root}}]}}


TOY_SPEC = {
    "note": {"type": "string", "nullable": True},
    "size": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True,
             "pattern": "^[0-9]+[a-z]*$"},
    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
    "mode": {"type": "string", "default": "fast"},
    "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
    "managedBy": {"type": "string", "x-kubernetes-validations": [
        {"rule": "self == oldSelf", "message": "immutable"},
        {"rule": "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']", "message": "bad manager"}]},
}


def toy_errors(spec: dict) -> list[str]:
    schema = crd_schema.schema_from_crd(crd("RayCluster", TOY_SPEC, required=["mode"]))
    obj = crd_schema.admit({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "toy"}, "spec": spec},
                        schema)
    errors = crd_schema.Validator(schema).iter_errors(obj)
    return sorted(f"{crd_schema._path(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_conversion_follows_the_api_server():
    schema = crd_schema.schema_from_crd(crd("RayCluster", TOY_SPEC))
    Draft202012Validator.check_schema(schema)
    spec = schema["properties"]["spec"]["properties"]
    assert spec["note"]["type"] == ["string", "null"]
    assert spec["size"]["type"] == ["integer", "string"] and "anyOf" not in spec["size"]
    assert spec["closed"]["additionalProperties"] is False and "additionalProperties" not in spec["extra"]
    assert spec["managedBy"]["x-kubernetes-validations"] == [{"rule": TOY_SPEC["managedBy"][
        "x-kubernetes-validations"][1]["rule"], "message": "bad manager"}]  # the update-only rule is dropped
    assert toy_errors({"note": None, "size": 3, "extra": {"anything": 1}, "closed": {"a": "x"}, "tags": ["a", "b"],
                       "managedBy": "ray.io/kuberay-operator"}) == []
    # the required `mode` is null, so defaulted: only the pattern fails
    assert toy_errors({"mode": None, "size": "12Gi"}) == ["spec.size: '12Gi' does not match '^[0-9]+[a-z]*$'"]
    assert toy_errors({"closed": {"b": "x"}}) == ["spec.closed: Additional properties are not allowed ('b' was "
                                                  "unexpected)"]
    assert toy_errors({"size": 1.5, "managedBy": "me", "tags": ["a", "a"]}) == [
        "spec.managedBy: bad manager", "spec.size: 1.5 is not of type 'integer', 'string'",
        'spec.tags: duplicate entry "a" (x-kubernetes-list-type: set)']


def test_admit_prunes_nulls_and_fills_defaults_like_the_api_server():
    schema = crd_schema.schema_from_crd(crd("RayCluster", TOY_SPEC))
    obj = {"spec": {"note": None, "closed": None, "mode": None, "extra": {"x": None}}}
    # nullable kept; non-nullable dropped; non-nullable with a default defaulted; unknown fields' nulls untouched
    assert crd_schema.admit(obj, schema)["spec"] == {"note": None, "mode": "fast", "extra": {"x": None}}
    assert crd_schema.admit({"spec": {}}, schema)["spec"] == {"mode": "fast"}


def test_a_cel_rule_without_a_translation_stops_regeneration():
    spec = {"x": {"type": "string", "x-kubernetes-validations": [{"rule": "self.size() < 3", "message": "short"}]}}
    with pytest.raises(ValueError, match="add one to RULES"):
        crd_schema.schema_from_crd(crd("RayJob", spec))


def test_regenerate_writes_a_schema_per_kind(tmp_path):
    (tmp_path / "ray.io_rayclusters.yaml").write_text(yaml.safe_dump(crd("RayCluster", TOY_SPEC)))
    written = crd_schema.regenerate_schemas(tmp_path, out_dir=tmp_path / "schemas")
    assert [p.name for p in written] == ["raycluster.json"]
    assert "KubeRay v1.7.0" in written[0].read_text()


@pytest.mark.parametrize("kind", sorted(crd_schema.KINDS))
def test_vendored_schemas_are_json_schema_from_kuberay_1_7(kind):
    schema = crd_schema.schema(kind)
    Draft202012Validator.check_schema(schema)
    assert "KubeRay v1.7.0" in schema["$comment"] and schema["properties"]["apiVersion"] == {"const": "ray.io/v1"}


# ---- a broken copy for each schema check ----

def test_unknown_field_is_rejected():
    doc = load("ray-cluster.gpu.yaml")
    doc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 4
    assert only_error(doc) == "spec.workerGroupSpecs[0]: unknown field 'maxReplica'"


def test_missing_required_field_is_rejected():
    doc = load("ray-job.pretrain.yaml")
    del doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    assert only_error(doc) == "spec.rayClusterSpec.workerGroupSpecs[0]: 'groupName' is a required property"


def test_rayStartParams_values_must_be_strings():
    doc = load("ray-cluster.gpu.yaml")
    doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # YAML's `num-cpus: 0`, unquoted
    assert only_error(doc) == "spec.headGroupSpec.rayStartParams.num-cpus: 0 is not of type 'string'"


@pytest.mark.parametrize("key,value", [("num-cpus", "zero"), ("num-gpus", "1 GPU")])
def test_rayStartParams_numbers_are_numbers(key, value):
    doc = load("ray-cluster.gpu.yaml")
    doc["spec"]["workerGroupSpecs"][0]["rayStartParams"][key] = value
    assert only_error(doc) == (f"spec.workerGroupSpecs[0].rayStartParams.{key}: {value!r} is not a number (ray start "
                               f"--{key} takes one)")


def test_quantities_are_int_or_string():
    doc = load("ray-cluster.gpu.yaml")
    resources = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]
    resources["limits"]["cpu"] = resources["requests"]["cpu"] = 2  # an integer is a quantity too
    assert kuberay.check(doc) == []
    resources["limits"]["cpu"] = 2.5
    assert only_error(doc).endswith("resources.limits.cpu: 2.5 is not of type 'integer', 'string'")
    resources["limits"]["cpu"] = "two"
    assert "resources.limits.cpu: 'two' does not match" in only_error(doc)


def test_nulls_are_pruned_or_defaulted_before_validation():
    doc = load("ray-cluster.gpu.yaml")
    doc["spec"]["suspend"] = None  # dropped: not nullable, no default
    doc["spec"]["workerGroupSpecs"][0]["numOfHosts"] = None  # defaulted to 1
    assert kuberay.check(doc) == []
    doc["spec"]["headGroupSpec"]["template"] = None  # dropped, and then missing
    assert only_error(doc) == "spec.headGroupSpec: 'template' is a required property"


def test_defaults_complete_list_map_keys_and_duplicates_are_rejected():
    doc = load("ray-cluster.gpu.yaml")
    ports = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    assert "protocol" not in ports[0]  # a key of the list-map (containerPort, protocol): the API server adds TCP
    ports.append({"containerPort": ports[0]["containerPort"], "name": "again"})
    assert only_error(doc) == ('spec.headGroupSpec.template.spec.containers[0].ports: duplicate entry '
                               '{"containerPort": 6379, "protocol": "TCP"} (x-kubernetes-list-type: map)')


def test_enum_is_enforced():
    doc = load("ray-cluster.gpu.yaml")
    doc["spec"]["autoscalerOptions"]["upscalingMode"] = "Fast"
    assert only_error(doc) == ("spec.autoscalerOptions.upscalingMode: 'Fast' is not one of ['Default', 'Aggressive', "
                               "'Conservative']")


def test_cel_rules_that_apply_on_create():
    doc = load("ray-service.chat.yaml")
    doc["spec"]["managedBy"] = "me"
    assert only_error(doc) == ("spec.managedBy: the managedBy field value must be either 'ray.io/kuberay-operator' or "
                               "'kueue.x-k8s.io/multikueue'")
    job = load("ray-job.pretrain.yaml")
    job["spec"]["deletionStrategy"] = {"onSuccess": {"policy": "DeleteCluster"}}
    assert only_error(job) == ("spec.deletionStrategy: deletionStrategy requires either BOTH onSuccess and onFailure, "
                               "OR the deletionRules field (cannot be empty)")
    job["spec"]["deletionStrategy"] = {"deletionRules": [{"policy": "DeleteCluster", "condition": {
        "jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Failed"}}]}
    assert only_error(job) == ("spec.deletionStrategy.deletionRules[0].condition: JobStatus and JobDeploymentStatus "
                               "cannot be used together within the same deletion condition.")


@pytest.mark.parametrize("change,error", [
    ({"name": "LMLife"}, "metadata.name: 'LMLife' does not match '^[a-z]([-a-z0-9]*[a-z0-9])?$'"),
    ({"name": "lmlife-" + "x" * 41}, "metadata.name: '" + "lmlife-" + "x" * 41 + "' is too long"),
    ({"name": None, "generateName": "lmlife-"}, "metadata: unknown field 'generateName'"),
])
def test_metadata_names_as_the_operator_wants_them(change, error):
    doc = load("ray-job.pretrain.yaml")
    doc["metadata"] |= change
    errors = kuberay.check(doc)
    assert error in errors, errors


def test_api_version_is_the_crds():
    doc = load("ray-job.pretrain.yaml")
    doc["apiVersion"] = "ray.io/v1alpha1"
    assert only_error(doc) == "apiVersion: 'ray.io/v1' was expected"


# ---- a broken copy for each check beyond the schema ----

def test_gpu_requests_must_equal_limits():
    doc = load("ray-cluster.gpu.yaml")
    doc["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "nvidia.com/gpu"] = "2"
    assert only_error(doc) == ("spec.workerGroupSpecs[0].template.spec.containers[0].resources: nvidia.com/gpu "
                               "requests 1 != limits 2: Kubernetes needs GPU requests equal to limits, in whole GPUs")


def test_ray_containers_run_the_project_image():
    doc = load("ray-job.pretrain.yaml")
    doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"] = "lmlife:0.0.9"
    assert only_error(doc) == ("spec.rayClusterSpec.headGroupSpec.template.spec.containers[0].image is "
                               "'lmlife:0.0.9': the Ray container runs the project image, lmlife:0.1.0 or "
                               "lmlife:0.1.0-gpu")
    doc = load("ray-job.pretrain.yaml")
    worker = doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    worker["image"] = "registry.example.com:5000/team/lmlife:0.1.0-gpu"  # pushed to a registry: the same image
    assert kuberay.check(doc) == []
    worker["image"] = "lmlife:0.1.0"
    assert only_error(doc).endswith("image is 'lmlife:0.1.0': the Ray container runs the project image, "
                                    "lmlife:0.1.0-gpu (it takes GPUs)")


def test_ray_version_is_the_images():
    doc = load("ray-service.chat.yaml")
    doc["spec"]["rayClusterConfig"]["rayVersion"] = "2.52.0"
    assert only_error(doc) == ("spec.rayClusterConfig.rayVersion must be '2.60.0', the Ray of k8s/Dockerfile's "
                               "base images")


def test_storage_credentials_come_from_a_secret():
    doc = load("ray-cluster.gpu.yaml")
    head = doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["env"] = [{"name": "AWS_SECRET_ACCESS_KEY", "value": "hunter2"}]
    assert only_error(doc) == ("spec.headGroupSpec.template.spec.containers[0].env: AWS_SECRET_ACCESS_KEY has a "
                               "literal value: credentials come from a Secret (valueFrom)")
    del head["env"], head["envFrom"]
    assert only_error(doc).startswith("spec.headGroupSpec.template.spec.containers[0]: no object-storage "
                                      "credentials from a Secret")
    head["env"] = [{"name": name, "valueFrom": {"secretKeyRef": {"name": "s3", "key": name}}}
                   for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    assert kuberay.check(doc) == []


@pytest.mark.parametrize("entrypoint,error", [
    ("python train.py", "spec.entrypoint: 'python train.py' is not `python -m pipelines.<stage> overrides...`"),
    ("python -m pipelines.pretrian", "spec.entrypoint: pipelines.pretrian: no such stage module in this project"),
    ("python -m pipelines.corpus", "spec.entrypoint: pipelines.corpus is not a Hydra stage: there is no "
                                   "conf/corpus.yaml"),
    ("python -m pipelines.pretrain trainer.lrr=1e-3", "spec.entrypoint: Could not override 'trainer.lrr'."),
    ("python -m pipelines.pretrain model=decoder_huge", "spec.entrypoint: In 'pretrain': Could not find "
                                                        "'model/decoder_huge'"),
    ("python -m pipelines.finetune data.root=s3://b/d run.root=s3://b/r", "spec.entrypoint: conf/finetune.yaml "
                                                                          "needs init_from="),
])
def test_rayjob_entrypoint_is_a_stage_whose_overrides_compose(entrypoint, error):
    doc = load("ray-job.pretrain.yaml")
    doc["spec"]["entrypoint"] = entrypoint
    assert only_error(doc).startswith(error)


@pytest.mark.parametrize("key,value", [
    ("run.root", "/mnt/runs"),
    ("data.root", "file:///data"),
    ("init_from", "runs/pretrain/small"),  # relative: made absolute on the driver's disk
])
def test_rayjob_storage_paths_are_uris(key, value):
    doc = load("ray-job.finetune.yaml")
    doc["spec"]["entrypoint"] = re.sub(rf"{re.escape(key)}=\S+", f"{key}={value}", doc["spec"]["entrypoint"])
    assert only_error(doc).startswith(f"spec.entrypoint: {key}={value} is a local path")


def test_rayjob_storage_default_is_local():
    doc = load("ray-job.lifecycle.yaml")
    doc["spec"]["entrypoint"] = doc["spec"]["entrypoint"].replace("data.root=s3://lmlife/data", "")
    assert only_error(doc).startswith("spec.entrypoint: data.root=data is a local path")


def test_rayjob_gpus_are_there_when_the_stage_starts():
    doc = load("ray-job.pretrain.yaml")
    doc["spec"]["entrypoint"] += " trainer.num_workers=3"
    assert only_error(doc).startswith("trainer.num_workers=3 x 1 GPU needs 3 GPUs but the cluster starts with 2")


def test_rayjob_deletes_its_cluster():
    doc = load("ray-job.sweep.yaml")
    doc["spec"]["shutdownAfterJobFinishes"] = False
    assert only_error(doc).startswith("spec.shutdownAfterJobFinishes must be true")


def test_rayservice_serve_config_is_yaml():
    doc = load("ray-service.chat.yaml")
    doc["spec"]["serveConfigV2"] = "applications:\n- name: chat\n  args: {checkpoint: [\n"
    assert only_error(doc).startswith("spec.serveConfigV2 is not YAML:")


def test_rayservice_builds_the_projects_app():
    doc = load("ray-service.chat.yaml")
    app = serve_app(doc) | {"import_path": "pipelines.serve.app:application"}
    assert only_error(with_serve_app(doc, app)) == ("spec.serveConfigV2: applications[0].import_path is "
                                                    "'pipelines.serve.app:application': this project's app is "
                                                    "pipelines.serve.app:build")


@pytest.mark.parametrize("args,error", [
    ({"serve": {"engine": {"max_batchs": 32}}}, "unknown serve setting 'serve.engine.max_batchs'"),
    ({"serve.engine.max_batchs": "32"}, "Could not override 'serve.engine.max_batchs'"),
    ({"checkpoint": "/runs/align/demo"}, "checkpoint=/runs/align/demo is a local path"),
    ({"serve": {"num_gpus": 2}}, "1 model replicas x serve.num_gpus=2 needs 2 GPUs on one pod; the largest pod has 1"),
    ({"serve": {"port": 9000}}, "serve.port has no effect in the app builder"),
])
def test_rayservice_args_compose_with_conf_serve(args, error):
    doc = load("ray-service.chat.yaml")
    app = serve_app(doc)
    app["args"] = {"checkpoint": app["args"]["checkpoint"]} | args
    assert error in only_error(with_serve_app(doc, app))


def test_rayservice_deployments_are_the_apps():
    doc = load("ray-service.chat.yaml")
    app = serve_app(doc) | {"deployments": [{"name": "ModelServer", "num_replicas": 2}, {"name": "Model"}]}
    assert only_error(with_serve_app(doc, app)) == ("spec.serveConfigV2: applications[0].deployments: no deployment "
                                                    "'Model' in the app (it has ['ChatServer', 'ModelServer'])")


# ---- a broken copy for each Dockerfile check ----

DOCKERFILE = (K8S / "Dockerfile").read_text()


@pytest.mark.parametrize("old,new,error", [
    ("rayproject/ray:2.60.0-py311-gpu", "rayproject/ray:2.59.0-py311-gpu",
     "the base images' Ray 2.59.0 and 2.60.0 must be one release within pyproject's ray"),
    ("rayproject/ray:2.60.0-py311 AS", "rayproject/ray:2.60.0-py310 AS",
     "the base images' Python 3.10 and 3.11 must be one version within pyproject's requires-python >=3.11"),
    ("rayproject/ray:2.60.0-py311-gpu", "rayproject/ray:2.60.0-py311", "stage base-gpu must start FROM "
                                                                        "rayproject/ray:<ray version>-py3XX-gpu"),
    ("ARG FLAVOR=cpu", "ARG FLAVOR=gpu", "the image must be built FROM base-${FLAVOR}, with ARG FLAVOR=cpu"),
    ("LMLIFE_TORCH_INDEX=https://download.pytorch.org/whl/cpu", "LMLIFE_TORCH_INDEX=https://pypi.org/simple",
     "LMLIFE_TORCH_INDEX must be https://download.pytorch.org/whl/cpu in base-cpu"),
    ('--index-url "${LMLIFE_TORCH_INDEX}" ', "", "no RUN installs torch (${TORCH_SPEC}) from ${LMLIFE_TORCH_INDEX}"),
    ('pip install --no-cache-dir -e . "${TORCH_SPEC}"', "pip install --no-cache-dir numpy",
     "no RUN installs the project (pip install -e .)"),
    ("COPY --chown=ray:users conf conf\n", "", "conf/ is not copied into the image"),
    ("org.opencontainers.image.version=0.1.0", "org.opencontainers.image.version=0.2.0",
     "LABEL org.opencontainers.image.title/version must be lmlife 0.1.0 (pyproject.toml), got lmlife 0.2.0"),
])
def test_dockerfile_check(old, new, error):
    assert old in DOCKERFILE
    errors = kuberay.check_dockerfile(DOCKERFILE.replace(old, new))
    assert len(errors) == 1 and errors[0].startswith(error), errors


def test_dockerfile_ignore_keeps_the_context_small():
    ignored = (K8S / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1:ignored.index("*") + 7] == [
        "!pyproject.toml", "!README.md", "!models", "!pipelines", "!cluster", "!conf"]
