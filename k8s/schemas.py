"""Writes the JSON schemas that kubeconform validates the rendered manifests
against, as files it finds by name:

  - each Kubernetes kind the manifests use, from the schemas that the
    kubernetes-validate package ships (strict: an unknown field is an
    error), with their references inlined, as kubeconform's loader does not
    follow them: `{kind}{-group}-{version}.json`;
  - each version of each CustomResourceDefinition given (KEDA's), made
    strict the same way: `{kind}-{group}-{version}.json`.

  python k8s/schemas.py --k8s DIR --out DIR [--crd CRD.yaml...] MANIFEST...
"""

import argparse
import copy
import json
from pathlib import Path

import yaml

def inline(node, defs, stack=()):
    if isinstance(node, list):
        return [inline(v, defs, stack) for v in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rpartition("#/$defs/")[2]
        if name not in defs:
            raise SystemExit(f"unexpected reference {ref}")
        if name in stack:  # a recursive type (none in the kinds used): anything
            return {}
        return inline(copy.deepcopy(defs[name]), defs, stack + (name,))
    return {k: inline(v, defs, stack) for k, v in node.items()}


def strict(node):
    if isinstance(node, dict):
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)
    return node


def kind_file(api_version, kind):
    group, _, version = api_version.rpartition("/")
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--k8s", type=Path, required=True, help="kubernetes-validate's vX.Y.Z-local-strict folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--crd", type=Path, action="append", default=[])
    p.add_argument("manifests", type=Path, nargs="+")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    crd_groups = set()
    for path in a.crd:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            spec = crd["spec"]
            crd_groups.add(spec["group"])
            kind = spec["names"]["kind"].lower()
            for v in spec["versions"]:
                schema = strict(v["schema"]["openAPIV3Schema"])
                (a.out / f"{kind}-{spec['group']}-{v['name']}.json").write_text(json.dumps(schema))
    defs = json.loads((a.k8s / "_definitions.json").read_text())["$defs"]
    for path in a.manifests:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["apiVersion"].partition("/")[0] in crd_groups:
                continue
            name = kind_file(doc["apiVersion"], doc["kind"])
            if (a.out / name).exists():
                continue
            source = a.k8s / name
            if not source.exists():
                raise SystemExit(f"{path}: no Kubernetes schema for {doc['apiVersion']} {doc['kind']} ({source})")
            schema = inline(json.loads(source.read_text()), defs)
            (a.out / name).write_text(json.dumps(schema))


if __name__ == "__main__":
    main()
