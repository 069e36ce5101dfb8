"""KubeRay's CRDs as the API server applies them, offline: `schema_from_crd` derives a JSON Schema (draft 2020-12)
from a CRD's storage version (k8s/schemas/<kind>.json, vendored; `python -m cluster.kuberay --regenerate-schemas`),
`admit` prepares an object as the API server does before it validates — non-nullable nulls without a default
dropped, defaults filled in (a port of apiextensions-apiserver's defaulting) — and `schema_errors` validates it:
unknown fields are errors (kubectl's strict field validation) unless x-kubernetes-preserve-unknown-fields,
int-or-string is `[integer, string]`, list-type set/map entries are unique, and the CEL rules that apply on create
are hand translations (RULES). metadata is the API server's ObjectMeta with the operator's rule for names (a
DNS-1035 label, short enough for the Services it derives from it).

The project's own checks on top of these (images, entry points, storage, GPUs) are cluster/kuberay.py's.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, ValidationError, validators

SCHEMAS = Path(__file__).resolve().parents[1] / "k8s" / "schemas"
KUBERAY_VERSION = "v1.7.0"
KINDS = {"RayCluster": "raycluster", "RayJob": "rayjob", "RayService": "rayservice"}
# The operator's longest name for each kind (ray-operator/controllers/ray/utils/constant.go): 63 minus the longest
# Service suffix it appends ("-serve-svc"), minus 6 more for the cluster a RayJob or RayService creates.
NAME_LIMITS = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
DNS1035_LABEL = "^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_LABEL = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# The CRDs' x-kubernetes-validations that apply on create, by their CEL text (rules on oldSelf only run on update).
_MANAGED_BY = ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")
RULES = {
    "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']": lambda self: self in _MANAGED_BY,
    "!(has(self.jobStatus) && has(self.jobDeploymentStatus))":
        lambda self: not ("jobStatus" in self and "jobDeploymentStatus" in self),
    "has(self.jobStatus) || has(self.jobDeploymentStatus)":
        lambda self: "jobStatus" in self or "jobDeploymentStatus" in self,
    "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))":
        lambda self: not (("onSuccess" in self or "onFailure" in self) and "deletionRules" in self),
    "((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))":
        lambda self: ("onSuccess" in self and "onFailure" in self) or "deletionRules" in self,
}


# ---- the CRD schemas ----

def schema_from_crd(crd: dict) -> dict:
    """The JSON Schema (draft 2020-12) of a CRD's storage version, as the API server applies it to a new object."""
    kind, group = crd["spec"]["names"]["kind"], crd["spec"]["group"]
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    schema = _convert(version["schema"]["openAPIV3Schema"])
    schema["properties"] |= {
        "apiVersion": {"const": f"{group}/{version['name']}"},
        "kind": {"const": kind},
        "metadata": _object_meta(NAME_LIMITS[kind]),
        "status": {"$comment": "written by the operator: the API server drops it on create (status subresource)"},
    }
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"{kind} ({group}/{version['name']})",
            "$comment": f"Derived from KubeRay {KUBERAY_VERSION}'s CRD {crd['metadata']['name']} by "
                        f"`python -m cluster.kuberay --regenerate-schemas CRD_DIR`; do not edit.", **schema}


def _convert(node: dict) -> dict:
    """One schema node: descriptions dropped, k8s extensions made JSON Schema (or kept for the Validator below)."""
    out = {}
    for key, value in node.items():
        if key in ("description", "nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
                   "x-kubernetes-map-type"):
            continue
        if key == "properties":
            out[key] = {name: _convert(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _convert(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [_convert(sub) for sub in value]
        elif key == "x-kubernetes-validations":
            rules = [{"rule": r["rule"], "message": r.get("message", r["rule"])} for r in value
                     if "oldSelf" not in r["rule"]]
            for rule in rules:
                if rule["rule"] not in RULES:
                    raise ValueError(f"no hand translation of the CEL rule {rule['rule']!r} ({rule['message']}): "
                                     f"add one to RULES in cluster/kuberay.py")
            if rules:
                out[key] = rules
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):  # anyOf: [{type: integer}, {type: string}]: one type list reads better
        out.pop("anyOf", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable") and "type" in out:
        out["type"] = [*_types(out), "null"]
    if (out.get("type") == "object" and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False  # the API server prunes unknown fields; kubectl's strict validation refuses
    return out


def _object_meta(max_name: int) -> dict:
    string_map = {"type": "object", "additionalProperties": {"type": "string"}}
    return {"type": "object", "required": ["name"], "additionalProperties": False,
            "$comment": f"ObjectMeta, which the API server validates itself (the CRD says only `type: object`); "
                        f"name as KubeRay's operator wants it, a DNS-1035 label of at most {max_name} characters, and "
                        f"required: `kubectl apply` cannot use generateName.",
            "properties": {"name": {"type": "string", "maxLength": max_name, "pattern": DNS1035_LABEL},
                           "namespace": {"type": "string", "maxLength": 63, "pattern": DNS1123_LABEL},
                           "labels": string_map, "annotations": string_map,
                           "finalizers": {"type": "array", "items": {"type": "string"}}}}


def regenerate_schemas(crd_dir: Path, out_dir: Path = SCHEMAS) -> list[Path]:
    """k8s/schemas/<kind>.json from the CRD YAMLs in `crd_dir` (KubeRay's ray-operator/config/crd/bases/)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes of YAML
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(crd_dir).glob("ray.io_*.yaml")):
        crd = yaml.load(path.read_text(), Loader=loader)
        kind = crd["spec"]["names"]["kind"]
        if kind in KINDS:
            target = out_dir / f"{KINDS[kind]}.json"
            target.write_text(json.dumps(schema_from_crd(crd), separators=(",", ":"), sort_keys=True) + "\n")
            written.append(target)
    return written


@functools.cache
def schema(kind: str) -> dict:
    return json.loads((SCHEMAS / f"{KINDS[kind]}.json").read_text())


# ---- what the API server does before it validates ----

def admit(obj, schema_: dict):
    """A copy of `obj` as the API server validates it: non-nullable nulls without a default removed, then defaults
    filled in (apiextensions-apiserver's PruneNonNullableNullsWithoutDefaults and Default, in that order)."""
    obj = copy.deepcopy(obj)
    _prune_nulls(obj, schema_)
    _default(obj, schema_)
    return obj


def _types(s: dict) -> list:
    t = s.get("type", [])
    return t if isinstance(t, list) else [t]


def _nullable(s: dict | None) -> bool:
    return s is not None and "null" in _types(s)


def _field_schema(s: dict | None, key: str) -> dict | None:
    if s is None:
        return None
    if key in s.get("properties", {}):
        return s["properties"][key]
    extra = s.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _prune_nulls(x, s: dict | None) -> None:
    if isinstance(x, dict):
        for key in list(x):
            sub = _field_schema(s, key)
            if x[key] is None and sub is not None and not _nullable(sub) and "default" not in sub:
                del x[key]
            else:
                _prune_nulls(x[key], sub)
    elif isinstance(x, list):
        for item in x:
            _prune_nulls(item, s.get("items") if s else None)


def _default(x, s: dict | None) -> None:
    if isinstance(x, dict) and s is not None:
        x.update({key: copy.deepcopy(prop["default"]) for key, prop in s.get("properties", {}).items()
                  if key not in x and "default" in prop})
        for key in x:
            x[key] = _filled(x[key], _field_schema(s, key))
    elif isinstance(x, list) and s is not None and isinstance(s.get("items"), dict):
        x[:] = [_filled(item, s["items"]) for item in x]


def _filled(value, s: dict | None):
    """`value` defaulted: a non-nullable null replaced by the schema's default, then its own fields."""
    if value is None and s is not None and "default" in s and not _nullable(s):
        value = copy.deepcopy(s["default"])
    _default(value, s)
    return value


# ---- the validator: JSON Schema plus the two k8s keywords kept in the schemas ----

def _cel_rules(validator, rules, instance, schema_):
    if "type" in schema_ and not any(validator.is_type(instance, t) for t in _types(schema_)):
        return  # the type error is reported; the API server runs no rule on a value of the wrong type
    for rule in rules:
        if not RULES[rule["rule"]](instance):
            yield ValidationError(rule["message"])


def _list_type(validator, list_type, instance, schema_):
    if not isinstance(instance, list) or list_type not in ("set", "map"):
        return
    keys = schema_.get("x-kubernetes-list-map-keys", [])
    seen = set()
    for item in instance:
        if list_type == "map" and isinstance(item, dict):
            key = json.dumps({k: item.get(k) for k in keys}, sort_keys=True)
        else:
            key = json.dumps(item, sort_keys=True)
        if key in seen:
            yield ValidationError(f"duplicate entry {key} (x-kubernetes-list-type: {list_type})")
        seen.add(key)


Validator = validators.extend(Draft202012Validator, {"x-kubernetes-validations": _cel_rules,
                                                     "x-kubernetes-list-type": _list_type})


@functools.cache
def _validator(kind: str) -> Draft202012Validator:
    return Validator(schema(kind))


def _path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(top level)"


def schema_errors(obj: dict) -> list[str]:
    """The CRD's verdict on `obj` (admitted: nulls pruned, defaults filled in), one line per error."""
    errors = []
    for error in _validator(obj["kind"]).iter_errors(obj):
        where = _path(error.absolute_path)
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = error.schema.get("properties", {})
            errors += [f"{where}: unknown field {name!r}" for name in error.instance if name not in known]
        else:
            errors.append(f"{where}: {error.message}")
    return sorted(errors)
