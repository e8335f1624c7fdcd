"""Readers for the deployment manifests: small pure functions the manifest tests share."""

from __future__ import annotations

import json
import shlex
import tomllib
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RAY_CLUSTER_YAML = REPO / "deploy" / "ray" / "cluster.yaml"
KUBERAY = REPO / "deploy" / "kuberay"

LEARNER_RESOURCE = "dmsac_learner"
ROLLOUT_RESOURCE = "dmsac_rollout"
GPU = "nvidia.com/gpu"


def load(path: Path) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def kuberay(name: str) -> Any:
    return load(KUBERAY / name)


def long_flags(command: str) -> dict[str, str]:
    """``--key=value`` / ``--key value`` / ``--flag`` options of a shell command line, last one wins."""
    words = shlex.split(command.replace(";", " ; "))
    flags: dict[str, str] = {}
    for i, word in enumerate(words):
        if not word.startswith("--"):
            continue
        key, eq, value = word[2:].partition("=")
        if not eq:
            follows = i + 1 < len(words) and not words[i + 1].startswith("-") and words[i + 1] != ";"
            value = words[i + 1] if follows else ""
        flags[key] = value
    return flags


def ray_start_commands(commands: list[str]) -> list[str]:
    return [c for c in commands if "ray start" in c]


def kuberay_resources(params: dict[str, str]) -> dict[str, float]:
    """Custom resources of a KubeRay ``rayStartParams``: ``'"{\\"name\\": 1}"'`` → ``{"name": 1}``."""
    raw = params.get("resources")
    if raw is None:
        return {}
    text = raw.strip()
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"')
    return json.loads(text)


def pod_groups(cluster_spec: dict) -> list[tuple[str, dict, dict]]:
    """``(group name, rayStartParams, pod template)`` for the head (named ``head``) and every worker group."""
    head = cluster_spec["headGroupSpec"]
    groups = [("head", head.get("rayStartParams", {}), head["template"])]
    for group in cluster_spec.get("workerGroupSpecs", []):
        groups.append((group["groupName"], group.get("rayStartParams", {}), group["template"]))
    return groups


def containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def gpu_quantity(container: dict, kind: str = "limits") -> int:
    return int(container.get("resources", {}).get(kind, {}).get(GPU, 0))


def named_ports(template: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in containers(template) for p in c.get("ports", []) if "name" in p}


def claim_mounts(template: dict) -> dict[str, set[str]]:
    """PVC claim name → the paths at which any container of the pod mounts it."""
    volume_claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in template["spec"].get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    mounts: dict[str, set[str]] = {}
    for c in containers(template):
        for m in c.get("volumeMounts", []):
            if m["name"] in volume_claims:
                mounts.setdefault(volume_claims[m["name"]], set()).add(m["mountPath"])
    return mounts


def entrypoint_words(entrypoint: str) -> list[str]:
    return shlex.split(entrypoint)


def set_overrides(words: list[str]) -> dict[str, str]:
    """``--set key=value`` pairs of a ``cluster.train`` command line."""
    pairs = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
    return dict(p.split("=", 1) for p in pairs)


def is_under(path: str, root: str) -> bool:
    return Path(path).is_absolute() and Path(path).resolve().is_relative_to(Path(root).resolve())


def project_dependencies() -> list[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["dependencies"]


def requirement_name(spec: str) -> str:
    """Normalised distribution name of a requirement string (``ray[default]>=2`` → ``ray``)."""
    name = spec
    for stop in "[<>=!~; ":
        name = name.split(stop, 1)[0]
    return name.strip().lower().replace("_", "-")


def makefile_torch_pin() -> str:
    for line in (REPO / "Makefile").read_text().splitlines():
        if line.startswith("TORCH_SPEC"):
            return line.split("=", 1)[1].strip().lstrip("=").strip()
    raise AssertionError("Makefile has no TORCH_SPEC line")


def docker_volume_targets(run_options: list[str]) -> dict[str, str]:
    """``-v HOST:CONTAINER`` options → ``{container path: host path}``."""
    found: dict[str, str] = {}
    for option in run_options:
        words = shlex.split(option)
        for i, w in enumerate(words[:-1]):
            if w in ("-v", "--volume"):
                host, container = words[i + 1].split(":")[:2]
                found[container] = host
    return found


def cpu_count(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def kuberay_node_resources(cluster_spec: dict) -> dict[str, tuple[int, dict[str, float]]]:
    """Group → (pods, the Ray resources one pod advertises), as KubeRay derives them from the spec."""
    nodes = {}
    replicas = {
        g["groupName"]: g.get("replicas", g.get("minReplicas", 0)) for g in cluster_spec.get("workerGroupSpecs", [])
    }
    for name, params, template in pod_groups(cluster_spec):
        limits = [c.get("resources", {}).get("limits", {}) for c in containers(template)]
        cpus = params.get("num-cpus", sum(cpu_count(lim.get("cpu", 0)) for lim in limits))
        gpus = params.get("num-gpus", sum(int(lim.get(GPU, 0)) for lim in limits))
        advertised = {"CPU": float(cpus), "GPU": float(gpus), **kuberay_resources(params)}
        nodes[name] = (replicas.get(name, 1), advertised)
    return nodes


def launcher_node_resources(cluster: dict) -> dict[str, tuple[int, dict[str, float]]]:
    """Node type → (nodes at min_workers, the resources one node advertises) of a ``ray up`` config."""
    types = cluster["available_node_types"]
    head = cluster["head_node_type"]
    return {
        name: (1 if name == head else t.get("min_workers", 0), {k: float(v) for k, v in t["resources"].items()})
        for name, t in types.items()
    }


def totals(nodes: dict[str, tuple[int, dict[str, float]]]) -> dict[str, float]:
    """What ``ray.cluster_resources()`` reports for these nodes."""
    total: dict[str, float] = {}
    for count, resources in nodes.values():
        for key, value in resources.items():
            total[key] = total.get(key, 0.0) + count * value
    return total


def fits(request: dict, node: dict[str, float]) -> bool:
    """Whether Ray could place an actor with these ``.options()`` on a node advertising ``node``."""
    wanted = {"CPU": request.get("num_cpus", 1), "GPU": request.get("num_gpus", 0), **request.get("resources", {})}
    return all(node.get(key, 0.0) >= value for key, value in wanted.items() if value)
