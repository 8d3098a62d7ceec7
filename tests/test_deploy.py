"""The deployment files, checked offline: every Kubernetes manifest against the Kubernetes JSON
schemas (kubernetes-validate, strict), the compose file against the compose specification's
schema (shipped by check-jsonschema), and what an operator relies on: gRPC probes on the health
port with a start-up allowance for the model load, graceful termination longer than the drain,
requests from the measured RSS, non-root, certificates from Secrets, the NetworkPolicy. The
images and manifests are not run on a cluster here."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31.0"
MODELS = {"stt": 50051, "llm": 50052, "tts": 50053}


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


def find(kind: str, name: str) -> dict[str, Any]:
    return next(doc for _, doc in documents() if doc["kind"] == kind and doc["metadata"]["name"] == name)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.mark.parametrize(("where", "doc"), documents(), ids=[w for w, _ in documents()])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(where: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kind", MODELS)
def test_model_deployments_probe_grpc_health_drain_gracefully_and_mount_their_certificates(kind: str) -> None:
    deployment = find("Deployment", kind)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container)
    prefix = kind.upper()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == int(env[f"{prefix}_HEALTH_PORT"]), probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model load needs minutes on a cold node"
    assert pod["terminationGracePeriodSeconds"] > float(env[f"{prefix}_GRACE_S"]), "SIGKILL before the drain ends"
    assert env[f"{prefix}_HOST"] == "0.0.0.0" and int(env[f"{prefix}_PORT"]) == MODELS[kind]
    assert set(container["resources"]["requests"]) == {"cpu", "memory"} and "memory" in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["configMapKeyRef"]["key"] == "otlp-endpoint"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets["tls"] == "voice-model-tls"
    for variable in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA"):
        assert env[f"{prefix}_{variable}"].startswith(mounts["tls"] + "/")  # mutual TLS from the Secret
    service = find("Service", kind)
    assert service["spec"]["clusterIP"] == "None", "headless: the gRPC client must see every pod"
    assert service["spec"]["ports"][0]["port"] == MODELS[kind]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_the_orchestrator_reaches_every_pod_through_dns_targets_with_its_client_certificate() -> None:
    (container,) = find("Deployment", "orchestrator")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    for kind, port in MODELS.items():
        assert env[f"{kind.upper()}_ADDRESS"] == f"dns:///{kind}.voice.svc.cluster.local:{port}"
    assert {"VOICE_TLS_CA", "VOICE_TLS_CERT", "VOICE_TLS_KEY"} <= env.keys()


def test_the_network_policy_lets_only_the_orchestrator_reach_the_model_services() -> None:
    policy = find("NetworkPolicy", "model-services-from-orchestrator-only")
    model_labels = find("Deployment", "llm")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= model_labels.items()
    grpc_rule = next(r for r in policy["spec"]["ingress"] if "from" in r)
    (source,) = grpc_rule["from"]
    orchestrator_labels = find("Deployment", "orchestrator")["spec"]["template"]["metadata"]["labels"]
    assert source["podSelector"]["matchLabels"].items() <= orchestrator_labels.items()
    assert {p["port"] for p in grpc_rule["ports"]} == set(MODELS.values())
    other = [r for r in policy["spec"]["ingress"] if "from" not in r]
    assert [p["port"] for r in other for p in r["ports"]] == [8081], "only the health port is open to the node"


def compose_schema() -> dict[str, Any]:
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    return dict(json.loads(text))


def test_the_compose_file_is_valid_and_runs_two_replicas_of_each_model_service_with_jaeger() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    jsonschema.validate(compose, compose_schema())
    services = compose["services"]
    assert {"stt", "llm", "tts", "orchestrator", "jaeger"} <= services.keys()
    for kind, port in MODELS.items():
        assert services[kind]["deploy"]["replicas"] == 2
        assert "service_runtime.probe" in services[kind]["healthcheck"]["test"]
        assert services["orchestrator"]["environment"][f"{kind.upper()}_ADDRESS"] == f"dns:///{kind}:{port}"
    assert services["stt"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"


def test_a_broken_manifest_is_caught() -> None:
    deployment = find("Deployment", "stt")
    deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["grpc"]["port"] = "8081"  # a string
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    compose["services"]["stt"]["replica"] = 2  # a typo of deploy.replicas
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(compose, compose_schema())


def test_the_image_runs_as_a_non_root_user_with_a_grpc_health_check() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    assert any(line.startswith("FROM") and "slim" in line for line in lines) or "slim" in dockerfile
    assert any(line.startswith("USER 10001") for line in lines)
    assert "HEALTHCHECK" in dockerfile and "service_runtime.probe" in dockerfile
