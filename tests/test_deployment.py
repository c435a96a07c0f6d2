"""The deployment files stay true: the Kubernetes example parses, and the configuration its
variables and the Dockerfile's give is valid GridKV configuration with the ports both name.
(No image is built here: see docs/deployment.md.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from gridkv import Options
from gridkv.base.config import env_overrides
from gridkv.security.identity import new_secret

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "examples" / "kubernetes" / "gridkv.yaml"
DOCKERFILE = ROOT / "Dockerfile"
pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason="no examples/ in this checkout")

#: What the downward API would give one pod, and the secret's keys.
POD = {"POD_NAME": "gridkv-1", "POD_NAMESPACE": "cache", "POD_IP": "10.244.1.7"}
SECRETS = {"cluster-secret": new_secret(), "resp-password": "door-password"}


def documents() -> dict[str, dict[str, Any]]:
    """The manifest's objects by "Kind/name"."""
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def container() -> dict[str, Any]:
    spec = documents()["StatefulSet/gridkv"]["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return dict(only)


def pod_environment() -> dict[str, str]:
    """The container's variables as Kubernetes would set them in pod gridkv-1."""
    env: dict[str, str] = {}
    for var in container()["env"]:
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = POD[var["name"]]
        else:
            env[var["name"]] = SECRETS[var["valueFrom"]["secretKeyRef"]["key"]]
    return env


def test_the_manifest_holds_a_headless_service_a_door_a_statefulset_and_a_budget() -> None:
    docs = documents()
    assert sorted(docs) == [
        "PodDisruptionBudget/gridkv",
        "Service/gridkv",
        "Service/gridkv-headless",
        "StatefulSet/gridkv",
    ]
    headless = docs["Service/gridkv-headless"]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["publishNotReadyAddresses"] is True
    stateful = docs["StatefulSet/gridkv"]["spec"]
    assert stateful["serviceName"] == "gridkv-headless"
    assert stateful["replicas"] == 3
    assert stateful["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_the_pods_variables_are_a_valid_configuration_seeded_through_dns() -> None:
    options = Options.from_mapping(env_overrides(pod_environment()))
    assert options.local_node_id == "gridkv-1"
    assert options.local_address == "10.244.1.7:7946"
    assert options.seed_addrs == ["dns:gridkv-headless.cache.svc.cluster.local:7946"]
    assert options.auth.trust_root == "secret"
    assert options.network.type == "tcp"
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert options.network.bind_addr.endswith(f":{ports['cluster']}")
    assert options.resp.listen.endswith(f":{ports['resp']}")
    assert options.health.listen.endswith(f":{ports['health']}")


def test_the_probes_ask_livez_and_readyz_on_the_health_port() -> None:
    spec = container()
    assert spec["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "health"}


def test_the_dockerfile_runs_gridkv_node_as_uid_10001_with_valid_defaults() -> None:
    text = DOCKERFILE.read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert final.startswith("python:3.11-slim")
    assert re.search(r"^USER 10001(:10001)?$", final, re.MULTILINE)
    assert re.search(r"^EXPOSE 7946 6379 8080$", final, re.MULTILINE)
    entry = re.search(r"^ENTRYPOINT (.+)$", final, re.MULTILINE)
    assert entry is not None and json.loads(entry.group(1)) == ["gridkv", "node"]
    env = dict(re.findall(r"(GRIDKV_\w+)=(\S+)", final))
    options = Options.from_mapping(env_overrides(env))
    assert options.network.bind_addr == "0.0.0.0:7946"
    assert options.health.listen == "0.0.0.0:8080"
