"""The deployment manifests say what the code needs: placement, ports, paths, rules.

Each test reads the shipped files under ``deploy/ray`` and ``deploy/kuberay``
and compares them with the code or with each other (deploy/CLUSTER.md lists
what is and is not checked).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from tests.deploy import manifest_checks as mc
from tests.deploy.prom_helpers import ADDED_ALERTS, SPEC_ALERTS

RAY_SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
CHECKPOINT_ROOT = "/mnt/dmsac"
# Kubernetes IANA_SVC_NAME: what a named container port (and so a PodMonitor port) may be.
PORT_NAME = re.compile(r"^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@pytest.fixture(scope="module")
def ray_cluster() -> dict:
    return mc.load(mc.RAY_CLUSTER_YAML)


@pytest.fixture(scope="module")
def raycluster() -> dict:
    return mc.kuberay("raycluster.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return mc.kuberay("rayjob.yaml")


def both_cluster_specs(raycluster: dict, rayjob: dict) -> list[tuple[str, dict]]:
    return [("RayCluster", raycluster["spec"]), ("RayJob", rayjob["spec"]["rayClusterSpec"])]


def entrypoint_run_dir(rayjob: dict) -> str:
    return mc.set_overrides(mc.entrypoint_words(rayjob["spec"]["entrypoint"]))["train.run_dir"]


def learner_port() -> int:
    from learner.metrics import MetricsConfig

    return MetricsConfig().port


# --- deploy/ray/cluster.yaml ----------------------------------------------------------------------


def test_cluster_yaml_validates_against_rays_bundled_schema(ray_cluster: dict) -> None:
    jsonschema.validate(ray_cluster, RAY_SCHEMA)
    # The schema is not vacuous here: a fractional resource count is refused.
    broken = copy.deepcopy(ray_cluster)
    broken["available_node_types"]["learner_gpu"]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(broken, RAY_SCHEMA)
    assert list(err.value.absolute_path) == ["available_node_types", "learner_gpu", "resources", "GPU"]


def test_cluster_yaml_passes_rays_own_launcher_checks(ray_cluster: dict) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(ray_cluster))
    validate_config(prepared)  # head type exists, sum of min_workers <= max_workers, schema
    assert prepared["head_node_type"] == "head"
    assert sum(t.get("min_workers", 0) for t in prepared["available_node_types"].values()) == 2


def test_every_ray_start_sets_the_metrics_export_port(ray_cluster: dict) -> None:
    head = mc.ray_start_commands(ray_cluster["head_start_ray_commands"])
    workers = mc.ray_start_commands(ray_cluster["worker_start_ray_commands"])
    assert len(head) == 1 and len(workers) == 1
    head_flags, worker_flags = mc.long_flags(head[0]), mc.long_flags(workers[0])
    assert "head" in head_flags and "head" not in worker_flags
    assert head_flags["metrics-export-port"] == worker_flags["metrics-export-port"] == "8080"
    # Ray's exporter and the learner's endpoint share the learner's node: they must differ.
    assert int(worker_flags["metrics-export-port"]) != learner_port()


def test_launcher_places_the_learner_on_the_gpu_node_only(ray_cluster: dict) -> None:
    types = ray_cluster["available_node_types"]
    head = types[ray_cluster["head_node_type"]]["resources"]
    assert head.get("GPU", 0) == 0 and head.get("CPU") == 0 and mc.LEARNER_RESOURCE not in head
    learner_types = [n for n, t in types.items() if t["resources"].get(mc.LEARNER_RESOURCE, 0) >= 1]
    assert learner_types == ["learner_gpu"]
    learner = types["learner_gpu"]
    assert learner["resources"]["GPU"] >= 1 and learner["max_workers"] == learner["min_workers"] == 1
    assert "gpu" in learner["docker"]["worker_image"]
    rollout = [t for t in types.values() if mc.ROLLOUT_RESOURCE in t["resources"]]
    assert rollout and all(t["resources"].get("GPU", 0) == 0 for t in rollout)
    assert all(t["resources"][mc.ROLLOUT_RESOURCE] == t["resources"]["CPU"] for t in rollout)


def test_launcher_installs_this_project_with_pinned_torch(ray_cluster: dict) -> None:
    mounts = ray_cluster["file_mounts"]
    synced = [remote for remote, local in mounts.items() if local == "."]
    assert synced == ["~/dmsac"]
    setup = ray_cluster["setup_commands"]
    assert any(mc.makefile_torch_pin() in c and "pip install" in c for c in setup)
    assert any(c.split()[-2:] == ["-e", synced[0]] and "pip install" in c for c in setup)
    torch_at = next(i for i, c in enumerate(setup) if "torch==" in c)
    project_at = next(i for i, c in enumerate(setup) if c.endswith(synced[0]))
    assert torch_at < project_at  # the pin first, or `-e .` resolves torch by itself


def test_launcher_mounts_shared_checkpoints_where_the_job_writes(ray_cluster: dict, rayjob: dict) -> None:
    # The host mounts the shared filesystem; docker shows it at the same path in every container;
    # the documented run_dir (the RayJob's) lies under it.
    volumes = mc.docker_volume_targets(ray_cluster["docker"]["run_options"])
    assert volumes == {CHECKPOINT_ROOT: CHECKPOINT_ROOT}
    host_mount = [c for c in ray_cluster["initialization_commands"] if "mount -t" in c]
    assert len(host_mount) == 1 and host_mount[0].split()[-1] == CHECKPOINT_ROOT
    assert mc.is_under(entrypoint_run_dir(rayjob), CHECKPOINT_ROOT)


def test_launcher_and_kuberay_use_one_ray_version(ray_cluster: dict, raycluster: dict) -> None:
    version = raycluster["spec"]["rayVersion"]
    images = [ray_cluster["docker"]["image"]] + [
        t["docker"]["worker_image"] for t in ray_cluster["available_node_types"].values() if "docker" in t
    ]
    images += [c["image"] for _, _, tpl in mc.pod_groups(raycluster["spec"]) for c in mc.containers(tpl)]
    assert len(images) == 5
    assert {img.split(":")[1].split("-")[0] for img in images} == {version}


# --- deploy/kuberay: RayJob entrypoint and runtime environment ------------------------------------


def test_rayjob_entrypoint_runs_cluster_train_on_a_config_in_the_repo(rayjob: dict) -> None:
    words = mc.entrypoint_words(rayjob["spec"]["entrypoint"])
    assert words[:3] == ["python", "-m", "cluster.train"]
    assert (mc.REPO / "cluster" / "train.py").is_file()
    args = dict(zip(words[3::2], words[4::2], strict=True))  # every flag takes a value
    assert args["--resume"] == "auto"
    assert (mc.REPO / args["--config"]).is_file(), f"{args['--config']} is not in the repository"


def test_rayjob_entrypoint_parses_and_its_config_loads(rayjob: dict) -> None:
    # The real CLI parser and config loader: an unknown flag or --set key fails here, not on the cluster.
    from cluster.alerts import alert_groups
    from cluster.config import load_config
    from cluster.train import parse_args
    from learner.checkpoint import checkpoint_root

    args = parse_args(mc.entrypoint_words(rayjob["spec"]["entrypoint"])[3:])
    config = load_config(mc.REPO / args.config, args.overrides)
    assert args.resume == "auto"
    assert config.train.run_dir == entrypoint_run_dir(rayjob)
    assert config.cluster.mode == "ray"
    root = checkpoint_root(config.checkpoint, config.train.run_dir)
    assert mc.is_under(str(root), CHECKPOINT_ROOT)  # checkpoints, not only the run dir, on the shared volume
    # The rollout actors fit the rollout group's slots (replicas x dmsac_rollout per pod).
    slots = sum(
        g["replicas"] * mc.kuberay_resources(g["rayStartParams"]).get(mc.ROLLOUT_RESOURCE, 0)
        for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    )
    assert 1 <= config.cluster.num_actors <= slots == 8
    # The job's own config renders the shipped rules (DmsacActorsDown counts its actors, thresholds match).
    assert alert_groups(config) == mc.kuberay("prometheusrule.yaml")["spec"]["groups"]
    assert config.metrics.port == learner_port() and config.metrics.bind_address == "0.0.0.0"


def test_rayjob_runtime_env_brings_the_code_and_every_dependency(rayjob: dict) -> None:
    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert env["working_dir"].endswith(".zip")
    packages = env["pip"]["packages"]
    assert mc.makefile_torch_pin() in packages
    wanted = {mc.requirement_name(d) for d in mc.project_dependencies()} - {"ray"}  # the image provides Ray
    assert wanted <= {mc.requirement_name(p) for p in packages}
    # SIGTERM → final checkpoint needs longer than Ray's default 3 s before SIGKILL.
    assert int(env["env_vars"]["RAY_JOB_STOP_WAIT_TIME_S"]) >= 60


def test_rayjob_cleans_up_and_retries(rayjob: dict, raycluster: dict) -> None:
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["backoffLimit"] >= 1  # a failed attempt reruns on a new cluster and resumes from last_good
    assert spec["submissionMode"] in {"K8sJobMode", "HTTPMode", "SidecarMode"}
    assert spec["rayClusterSpec"] == raycluster["spec"]


# --- deploy/kuberay: GPU placement, shared volume, ports ------------------------------------------


@pytest.mark.parametrize("which", ["RayCluster", "RayJob"])
def test_kuberay_gpu_requests_match_the_learners_placement(which: str, raycluster: dict, rayjob: dict) -> None:
    spec = dict(both_cluster_specs(raycluster, rayjob))[which]
    learner_groups, gpu_groups = [], []
    for name, params, template in mc.pod_groups(spec):
        gpus = [mc.gpu_quantity(c) for c in mc.containers(template)]
        assert [mc.gpu_quantity(c, "requests") for c in mc.containers(template)] in (gpus, [0] * len(gpus))
        assert int(params.get("num-gpus", sum(gpus))) == sum(gpus), name  # Ray sees what the pod gets
        if sum(gpus):
            gpu_groups.append(name)
        if mc.kuberay_resources(params).get(mc.LEARNER_RESOURCE, 0) >= 1:
            learner_groups.append(name)
    assert learner_groups == gpu_groups == ["learner-gpu"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_every_ray_pod_mounts_the_shared_claim_at_one_path(raycluster: dict, rayjob: dict) -> None:
    pvc = mc.kuberay("pvc.yaml")
    claim = pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    paths = set()
    for which, spec in both_cluster_specs(raycluster, rayjob):
        groups = mc.pod_groups(spec)
        assert len(groups) == 3, which
        for name, _, template in groups:
            mounts = mc.claim_mounts(template).get(claim, set())
            assert len(mounts) == 1, f"{which}/{name} mounts {claim} at {mounts}"
            paths |= mounts
    assert paths == {CHECKPOINT_ROOT}
    assert mc.is_under(entrypoint_run_dir(rayjob), CHECKPOINT_ROOT)


def test_kuberay_metrics_export_port_is_set_and_declared_on_every_pod(raycluster: dict) -> None:
    for name, params, template in mc.pod_groups(raycluster["spec"]):
        port = int(params["metrics-export-port"])
        assert mc.named_ports(template)["metrics"] == port == 8080, name


def test_podmonitor_scrapes_the_port_the_learner_serves(raycluster: dict) -> None:
    monitor = mc.kuberay("podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    endpoints = monitor["spec"]["podMetricsEndpoints"]
    assert [e["port"] for e in endpoints] == ["dmsac-metrics"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    served = {}
    for name, params, template in mc.pod_groups(raycluster["spec"]):
        assert selector.items() <= template["metadata"]["labels"].items(), f"{name} not selected"
        if "dmsac-metrics" in mc.named_ports(template):
            served[name] = mc.named_ports(template)["dmsac-metrics"]
            assert mc.kuberay_resources(params).get(mc.LEARNER_RESOURCE, 0) >= 1  # where the learner runs
    assert served == {"learner-gpu": learner_port()}
    assert endpoints[0]["path"] == "/metrics"
    # The rules select job="<alerts.job>": the PodMonitor must give the target that job label.
    from cluster.alerts import AlertsConfig

    job = [r["replacement"] for r in endpoints[0]["relabelings"] if r["targetLabel"] == "job"]
    assert job == [AlertsConfig().job] == ["dmsac"]


def test_container_port_names_are_valid_kubernetes_names(raycluster: dict) -> None:
    names = [n for _, _, t in mc.pod_groups(raycluster["spec"]) for n in mc.named_ports(t)]
    assert len(names) == 7
    assert [n for n in names if not PORT_NAME.match(n)] == []
    assert not PORT_NAME.match("dmsac-learner-metrics")  # 21 characters: Kubernetes refuses it


# --- Kubernetes schemas (core objects) and CRD required fields -------------------------------------

K8S_VERSION = "1.30"


def k8s_validate(document: dict) -> None:
    import kubernetes_validate as kv

    kv.validate(document, K8S_VERSION, strict=True)


def as_pod_template(template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"}, "template": template}


def test_pvc_matches_the_kubernetes_schema() -> None:
    k8s_validate(mc.kuberay("pvc.yaml"))


@pytest.mark.parametrize("which", ["RayCluster", "RayJob"])
def test_every_pod_template_matches_the_kubernetes_schema(which: str, raycluster: dict, rayjob: dict) -> None:
    spec = dict(both_cluster_specs(raycluster, rayjob))[which]
    checked = 0
    for _, _, template in mc.pod_groups(spec):
        k8s_validate(as_pod_template(template))
        checked += 1
    assert checked == 3


def test_kubernetes_schema_check_catches_a_misspelt_field(raycluster: dict) -> None:
    import kubernetes_validate as kv

    template = copy.deepcopy(raycluster["spec"]["workerGroupSpecs"][0]["template"])
    template["spec"]["containers"][0]["volumeMount"] = template["spec"]["containers"][0].pop("volumeMounts")
    with pytest.raises(kv.ValidationError) as err:
        k8s_validate(as_pod_template(template))
    assert "volumeMount" in err.value.message


def check_cluster_spec_fields(spec: dict) -> None:
    """The fields RayCluster's CRD requires, and the types it enforces on rayStartParams."""
    head = spec["headGroupSpec"]
    assert isinstance(head["template"]["spec"]["containers"], list)
    groups = spec["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    for _, params, _ in mc.pod_groups(spec):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), params  # map[string]string


@pytest.mark.parametrize("which", ["RayCluster", "RayJob"])
def test_ray_custom_resources_have_the_required_fields(which: str, raycluster: dict, rayjob: dict) -> None:
    document = {"RayCluster": raycluster, "RayJob": rayjob}[which]
    assert (document["apiVersion"], document["kind"]) == ("ray.io/v1", which)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", document["metadata"]["name"])
    check_cluster_spec_fields(dict(both_cluster_specs(raycluster, rayjob))[which])
    if which == "RayJob":
        assert document["spec"]["entrypoint"].strip()


def test_cluster_spec_check_catches_a_numeric_ray_start_param(raycluster: dict) -> None:
    spec = copy.deepcopy(raycluster["spec"])
    spec["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = 1  # YAML `1`, not "1": the CRD refuses it
    with pytest.raises(AssertionError):
        check_cluster_spec_fields(spec)


# --- PrometheusRule: the shipped file -------------------------------------------------------------


def test_prometheusrule_holds_exactly_the_rendered_alert_groups() -> None:
    from cluster import kube
    from cluster.config import Config

    shipped = mc.kuberay("prometheusrule.yaml")
    assert (shipped["apiVersion"], shipped["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    alerts_yml = mc.load(mc.REPO / "deploy" / "prometheus" / "alerts.yml")
    rendered = kube.rule_groups(Config())
    assert shipped["spec"]["groups"] == rendered == alerts_yml["groups"]
    rules = [r for g in rendered for r in g["rules"]]
    assert all(g["name"] and g["rules"] for g in rendered)
    assert all(r["alert"] and r["expr"] for r in rules)
    assert sorted(r["alert"] for r in rules) == sorted(SPEC_ALERTS | ADDED_ALERTS)  # each alert once
    assert kube.main(["render-rule", "--check"]) == 0  # the shipped file is a fresh render


# --- the driver's placement requests against the nodes the manifests create -----------------------


def manifest_nodes(ray_cluster: dict, raycluster: dict) -> dict[str, dict]:
    return {
        "ray up": mc.launcher_node_resources(ray_cluster),
        "KubeRay": mc.kuberay_node_resources(raycluster["spec"]),
    }


@pytest.mark.parametrize("setup", ["ray up", "KubeRay"])
def test_learner_and_actor_requests_fit_only_their_nodes(
    setup: str, ray_cluster: dict, raycluster: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cluster import placement
    from cluster.config import load_config

    nodes = manifest_nodes(ray_cluster, raycluster)[setup]
    monkeypatch.setattr(placement.ray, "cluster_resources", lambda: mc.totals(nodes))
    config = load_config(mc.REPO / "configs" / "vehicle.yaml")  # learner.device: auto
    learner = placement.learner_options(config)
    rollout = placement.rollout_options(config)
    assert learner.get("num_gpus") == 1 and learner["resources"] == {mc.LEARNER_RESOURCE: 1}
    learner_nodes = [name for name, (_, res) in nodes.items() if mc.fits(learner, res)]
    rollout_nodes = [name for name, (_, res) in nodes.items() if mc.fits(rollout, res)]
    expected = {"ray up": (["learner_gpu"], ["rollout_cpu"]), "KubeRay": (["learner-gpu"], ["rollout-cpu"])}
    assert (learner_nodes, rollout_nodes) == expected[setup]
