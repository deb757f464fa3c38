"""The installation policy (dj_operator.policy): each rule refuses with the field and the rule
named, opt-ins allow, settings parse from the environment; the security contexts merge instead
of replacing; and a refused job fails before any pod is asked for."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from operator_fixtures import make_job

from dj_operator.api import constants as c
from dj_operator.api.types import OperatorDefaults, parse_spec
from dj_operator.build import children, security
from dj_operator.main import defaults_from_env
from dj_operator.policy import (
    DEFAULT_POLICY,
    RULES,
    SETTINGS,
    Policy,
    PolicyViolation,
    check_job,
    check_paths,
    image_allowed,
    policy_from_env,
)
from dj_operator.status import times
from dj_operator.status.decide import Observed
from dj_operator.status.derive import derive
from dj_runner import contract

Obj = dict[str, Any]
INIT = "spec.runner.initContainers[0]"


def _runner(**fields: Any) -> Obj:
    spec = copy.deepcopy(make_job()["spec"])
    spec["runner"].update(fields)
    return spec


def _init(**fields: Any) -> Obj:
    spec = copy.deepcopy(make_job()["spec"])
    spec["runner"]["initContainers"][0].update(fields)
    return spec


def _object_store(**credentials: Any) -> Obj:
    spec = copy.deepcopy(make_job()["spec"])
    spec["storage"] = {"objectStore": {"workDir": "s3://bucket/work", **credentials}}
    return spec


STORE = "spec.storage.objectStore"

REFUSED = [
    # (case, job spec, field named, rule named)
    (
        "store-secret",
        _object_store(credentialsSecret={"name": "team-admin-keys"}),
        f"{STORE}.credentialsSecret.name",
        "secrets",
    ),
    (
        "store-identity",
        _object_store(webIdentity={"serviceAccountName": "cluster-admin-sa"}),
        f"{STORE}.webIdentity.serviceAccountName",
        "serviceAccounts",
    ),
    (
        "privileged",
        _runner(securityContext={"privileged": True}),
        "spec.runner.securityContext.privileged",
        "privileged",
    ),
    (
        "init-privileged",
        _init(securityContext={"privileged": True}),
        f"{INIT}.securityContext.privileged",
        "privileged",
    ),
    (
        "escalation",
        _runner(securityContext={"allowPrivilegeEscalation": True}),
        "spec.runner.securityContext.allowPrivilegeEscalation",
        "privilegeEscalation",
    ),
    (
        "capability",
        _runner(securityContext={"capabilities": {"add": ["NET_ADMIN"]}}),
        "spec.runner.securityContext.capabilities.add[0]",
        "capabilities",
    ),
    (
        "root-user",
        _runner(securityContext={"runAsUser": 0}),
        "spec.runner.securityContext.runAsUser",
        "root",
    ),
    (
        "root-pod",
        _runner(podSecurityContext={"runAsNonRoot": False}),
        "spec.runner.podSecurityContext.runAsNonRoot",
        "root",
    ),
    (
        "init-root",
        _init(securityContext={"runAsUser": 0}),
        f"{INIT}.securityContext.runAsUser",
        "root",
    ),
    (
        "host-path",
        _runner(volumes=[{"name": "root", "hostPath": {"path": "/"}}]),
        "spec.runner.volumes[0].hostPath",
        "hostPath",
    ),
    (
        "nfs",
        _runner(volumes=[{"name": "n", "nfs": {"server": "x", "path": "/"}}]),
        "spec.runner.volumes[0].nfs",
        "volumeTypes",
    ),
    (
        "secret-volume",
        _runner(volumes=[{"name": "s", "secret": {"secretName": "db-password"}}]),
        "spec.runner.volumes[0].secret.secretName",
        "secrets",
    ),
    (
        "projected-secret",
        _runner(volumes=[{"name": "p", "projected": {"sources": [{"secret": {"name": "tls"}}]}}]),
        "spec.runner.volumes[0].projected.sources[0].secret.name",
        "secrets",
    ),
    (
        "env-secret",
        _runner(
            env=[{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
        ),
        "spec.runner.env[0].valueFrom.secretKeyRef.name",
        "secrets",
    ),
    (
        "init-env-from-secret",
        _init(envFrom=[{"secretRef": {"name": "db"}}]),
        f"{INIT}.envFrom[0].secretRef.name",
        "secrets",
    ),
    (
        "host-network",
        _runner(hostNetwork=True),
        "spec.runner.hostNetwork",
        "hostNamespaces",
    ),
    (
        "host-port",
        _init(ports=[{"containerPort": 80, "hostPort": 80}]),
        f"{INIT}.ports[0].hostPort",
        "hostNamespaces",
    ),
    (
        "seccomp-unconfined",
        _runner(podSecurityContext={"seccompProfile": {"type": "Unconfined"}}),
        "spec.runner.podSecurityContext.seccompProfile.type",
        "seccomp",
    ),
    (
        "selinux-user",
        _runner(securityContext={"seLinuxOptions": {"user": "system_u"}}),
        "spec.runner.securityContext.seLinuxOptions.user",
        "seLinux",
    ),
    (
        "unsafe-sysctl",
        _runner(podSecurityContext={"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}),
        "spec.runner.podSecurityContext.sysctls[0].name",
        "sysctls",
    ),
    (
        "apparmor-unconfined",
        _runner(securityContext={"appArmorProfile": {"type": "Unconfined"}}),
        "spec.runner.securityContext.appArmorProfile.type",
        "appArmor",
    ),
    (
        "proc-mount",
        _runner(securityContext={"procMount": "Unmasked"}),
        "spec.runner.securityContext.procMount",
        "procMount",
    ),
]


@pytest.mark.parametrize(
    ("case", "spec", "field", "rule"), REFUSED, ids=[case[0] for case in REFUSED]
)
def test_each_rule_refuses_with_the_field_and_the_rule_named(
    case: str, spec: Obj, field: str, rule: str
) -> None:
    with pytest.raises(PolicyViolation) as info:
        check_job(spec)
    assert info.value.field_path == field
    assert info.value.rule == rule
    message = str(info.value)
    assert message.startswith(f"{field}: got ")
    assert f"(rule {rule})" in message and RULES[rule] in message


def test_every_rule_is_exercised_by_a_refusal() -> None:
    tested = {case[3] for case in REFUSED} | {"images", "pathsOutsideMount"}
    assert set(RULES) == tested


def test_the_examples_and_the_restricted_defaults_pass_the_default_policy() -> None:
    check_job(make_job()["spec"])
    check_job(
        _runner(
            securityContext={"runAsUser": 1000, "readOnlyRootFilesystem": False},
            podSecurityContext={"runAsNonRoot": True, "fsGroup": 1000},
            volumes=[{"name": "e", "emptyDir": {}}, {"name": "c", "configMap": {"name": "x"}}],
        )
    )


@pytest.mark.parametrize(
    ("case", "policy"),
    [
        ("privileged", Policy(allow_privileged=True)),
        ("escalation", Policy(allow_privilege_escalation=True)),
        ("capability", Policy(allowed_capabilities=frozenset({"NET_ADMIN"}))),
        ("root-user", Policy(allow_root=True)),
        ("host-path", Policy(allow_host_path=True)),
        ("secret-volume", Policy(allowed_secrets=frozenset({"db-password"}))),
        ("env-secret", Policy(allowed_secrets=frozenset({"db"}))),
        ("store-secret", Policy(allowed_secrets=frozenset({"team-admin-keys"}))),
        ("store-identity", Policy(allowed_service_accounts=frozenset({"cluster-admin-sa"}))),
    ],
)
def test_an_installation_may_opt_in(case: str, policy: Policy) -> None:
    spec = next(s for name, s, _, _ in REFUSED if name == case)
    check_job(spec, policy)


def test_images_only_from_allowed_prefixes_when_configured() -> None:
    spec = make_job()["spec"]  # an init container from busybox:1.36
    check_job(spec)  # no prefixes: any image
    policy = Policy(allowed_image_prefixes=("registry.example/dj/",))
    with pytest.raises(PolicyViolation) as info:
        check_job(spec, policy)
    assert (info.value.field_path, info.value.rule) == (f"{INIT}.image", "images")
    spec["runner"]["initContainers"][0]["image"] = "registry.example/dj/busybox:1.36"
    check_job(spec, policy)
    spec["ray"] = {"mode": "kuberay", "image": "docker.io/rayproject/ray:2.60.0"}
    with pytest.raises(PolicyViolation, match=r"spec\.ray\.image"):
        check_job(spec, policy)


def test_recipe_paths_outside_the_mount_are_refused() -> None:
    spec = _runner(volumeMounts=[{"name": "ds", "mountPath": "/datasets/"}])
    check_paths({"dataset_path": "/data/in.jsonl"}, "/data", spec, "spec.recipe")
    check_paths({"dataset_path": "/datasets/a/in.jsonl"}, "/data", spec, "spec.recipe")
    check_paths({"dataset_path": "s3://corpus/in/"}, "/data", spec, "spec.recipe")  # no file
    with pytest.raises(PolicyViolation) as info:
        check_paths({"dataset_path": "/etc/passwd"}, "/data", spec, "spec.recipe")
    assert (info.value.field_path, info.value.rule) == (
        "spec.recipe.dataset_path",
        "pathsOutsideMount",
    )
    with pytest.raises(PolicyViolation):  # a sibling with the mount as prefix is outside
        check_paths({"export_path": "/data2/out.jsonl"}, "/data", spec, "spec.recipe")
    check_paths(
        {"dataset_path": "/etc/passwd"},
        "/data",
        spec,
        "spec.recipe",
        Policy(allow_paths_outside_mount=True),
    )


def test_on_object_storage_only_the_jobs_own_mounts_are_roots() -> None:
    spec = _object_store()
    spec["runner"] = {"volumeMounts": [{"name": "ds", "mountPath": "/datasets"}]}
    check_paths({"dataset_path": "s3://corpus/in/"}, None, spec, "spec.recipe")
    check_paths({"dataset_path": "/datasets/in.jsonl"}, None, spec, "spec.recipe")
    with pytest.raises(PolicyViolation) as info:  # no claim is mounted at /data
        check_paths({"export_path": "/data/out.jsonl"}, None, spec, "spec.recipe")
    assert (info.value.field_path, info.value.rule) == (
        "spec.recipe.export_path",
        "pathsOutsideMount",
    )


def test_settings_parse_from_the_environment() -> None:
    assert policy_from_env({}) == DEFAULT_POLICY
    policy = policy_from_env(
        {
            "DJ_POLICY_ALLOW_PRIVILEGED": "true",
            "DJ_POLICY_ALLOW_ROOT": "False",
            "DJ_POLICY_ALLOWED_CAPABILITIES": "cap_net_bind_service, SYS_TIME",
            "DJ_POLICY_ALLOWED_SECRETS": "a,b",
            "DJ_POLICY_ALLOWED_SERVICE_ACCOUNTS": "s3-reader, ",
            "DJ_POLICY_ALLOWED_IMAGE_PREFIXES": "reg.example/a/, reg.example/b/",
            "DJ_JOB_NETWORK_POLICY": "false",
            "DJ_JOB_METRICS_FROM": '[{"namespaceSelector": {}}]',
            "DJ_POLICY_ALLOW_HOST_PATH": "",
        }
    )
    assert policy.allow_privileged and not policy.allow_root and not policy.allow_host_path
    assert policy.allowed_capabilities == {"NET_BIND_SERVICE", "SYS_TIME"}
    assert policy.allowed_secrets == {"a", "b"}
    assert policy.allowed_service_accounts == {"s3-reader"}
    assert policy.allowed_image_prefixes == ("reg.example/a/", "reg.example/b/")
    assert policy.network_policy is False
    assert policy.metrics_from == ({"namespaceSelector": {}},)
    assert defaults_from_env({"DJ_POLICY_ALLOW_ROOT": "true"}).policy == Policy(allow_root=True)
    assert {s.field for s in SETTINGS} == set(Policy.__dataclass_fields__)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"DJ_POLICY_ALLOW_ROOT": "yes"},
            "DJ_POLICY_ALLOW_ROOT: got 'yes'; expected true or false",
        ),
        ({"DJ_JOB_METRICS_FROM": "{}"}, "DJ_JOB_METRICS_FROM: got '{}'; expected a JSON list"),
        ({"DJ_JOB_METRICS_FROM": "[1]"}, "expected a JSON list of objects"),
    ],
)
def test_bad_settings_are_refused_with_the_variable_named(env: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[")):
        policy_from_env(env)


# -- merge semantics ---------------------------------------------------------------------------

INSTALLATION = OperatorDefaults(
    security_context={
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    },
    pod_security_context={
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
)


def test_a_jobs_context_merges_with_the_installations_instead_of_replacing_it() -> None:
    job = make_job()
    job["spec"]["runner"]["securityContext"] = {
        "runAsUser": 2000,
        "capabilities": {"drop": ["NET_RAW"]},
    }
    job["spec"]["runner"]["podSecurityContext"] = {"fsGroup": 3000}
    spec = parse_spec(job["spec"], INSTALLATION)
    pod = children.runner_pod(job, spec, 1, "/data/w")["spec"]
    sc = pod["containers"][0]["securityContext"]
    assert sc["runAsUser"] == 2000
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert set(sc["capabilities"]["drop"]) == {"ALL", "NET_RAW"}
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "fsGroup": 3000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_init_and_ray_containers_get_the_restricted_context_too() -> None:
    job = make_job()
    job["spec"]["runner"]["initContainers"][0]["securityContext"] = {"runAsUser": 4000}
    job["spec"]["ray"] = {"mode": "kuberay", "workerGroups": [{"name": "w"}]}
    spec = parse_spec(job["spec"], INSTALLATION)
    (init,) = children.runner_pod(job, spec, 1, "/data/w")["spec"]["initContainers"]
    assert init["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsUser": 4000,
    }
    cluster = children.ray_cluster(job, spec)["spec"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        group["template"] for group in cluster["workerGroupSpecs"]
    ]
    for template in templates:
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == "demo-ray"
        (container,) = pod["containers"]
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": c.TMP_VOLUME, "mountPath": "/tmp"} in container["volumeMounts"]
        assert template["metadata"]["labels"][contract.LABEL_JOB] == "demo"
    head_params = cluster["headGroupSpec"]["rayStartParams"]
    assert head_params["dashboard-host"] == "127.0.0.1"


def test_without_installation_defaults_pods_are_still_restricted() -> None:
    job = make_job()
    pod = children.runner_pod(job, parse_spec(job["spec"]), 1, "/data/w")["spec"]
    assert pod["securityContext"] == security.RESTRICTED_POD
    for container in [*pod["containers"], *pod["initContainers"]]:
        assert container["securityContext"] == security.RESTRICTED_CONTAINER


def test_what_a_policy_allowed_is_not_undone_by_the_baseline() -> None:
    privileged = security.container_context({"privileged": True})
    assert privileged["privileged"] is True and "allowPrivilegeEscalation" not in privileged
    root = security.container_context({"runAsUser": 0})
    assert root["runAsNonRoot"] is False
    assert "runAsNonRoot" not in security.pod_context({"runAsUser": 0})
    explicit = security.container_context({"privileged": True, "allowPrivilegeEscalation": True})
    assert explicit["allowPrivilegeEscalation"] is True


# -- a refused job fails before any pod --------------------------------------------------------


def test_a_refused_job_fails_invalid_spec_with_no_action() -> None:
    job = make_job(spec=_runner(volumes=[{"name": "root", "hostPath": {"path": "/"}}]))
    spec = parse_spec(job["spec"])
    try:
        check_job(job["spec"])
    except PolicyViolation as exc:
        error = exc
    out = derive(Observed(job=job, spec=spec, spec_error=error, pods=[], now=times.now()))
    assert out.phase == c.FAILED
    assert out.actions == ()
    failure = out.status["failure"]
    assert failure["reason"] == c.R_INVALID_SPEC
    assert "spec.runner.volumes[0].hostPath" in failure["message"]
    assert "(rule hostPath)" in failure["message"]


def test_image_prefixes_match_at_a_boundary() -> None:
    assert image_allowed("registry.example.org/dj/runner:1", "registry.example.org")
    assert image_allowed("registry.example.org/dj/runner:1", "registry.example.org/dj/")
    assert image_allowed("registry.example.org:5000/dj:1", "registry.example.org")
    assert not image_allowed("registry.example.org.evil.io/dj:1", "registry.example.org")
    assert not image_allowed("registry.example.orgx/dj:1", "registry.example.org")
