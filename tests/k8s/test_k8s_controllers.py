"""The controllers of kube-controller-manager work with the process node: Job, GC, RBAC."""

from __future__ import annotations

import json
import textwrap

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.harness.cluster import Cluster
from tests.harness.waiting import wait_for
from tests.k8s.podutil import python_pod, wait_phase

pytestmark = pytest.mark.k8s


def _job(name: str, code: str) -> dict:
    manifest = python_pod(name, code)
    template = {"metadata": {"labels": {"job": name}}, "spec": manifest["spec"]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": template},
    }


def _job_condition(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    job = batch.read_namespaced_job(name, namespace)
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def test_job_pod_is_created_run_and_the_job_completes(
    k8s_cluster: Cluster, core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    batch.create_namespaced_job(namespace, _job("compute", "print('job says', 6 * 7)"))
    result = wait_for(
        lambda: _job_condition(batch, namespace, "compute"), 90, "job compute finished"
    )
    assert result == "Complete"
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=compute").items
    assert len(pods) == 1
    assert pods[0].metadata.owner_references[0].kind == "Job"
    assert pods[0].status.phase == "Succeeded"
    assert "job says 42" in k8s_cluster.node.logs(namespace, pods[0].metadata.name)
    assert batch.read_namespaced_job("compute", namespace).status.succeeded == 1


def test_deleting_an_owner_garbage_collects_its_dependents(
    core: client.CoreV1Api, batch: client.BatchV1Api, namespace: str
) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    for i in range(3):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"dependent-{i}", "ownerReferences": [reference]}}
        )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "bystander"}})
    core.delete_namespaced_config_map("owner", namespace)

    def remaining() -> list[str]:
        return sorted(c.metadata.name for c in core.list_namespaced_config_map(namespace).items)

    wait_for(lambda: remaining() == ["bystander", "kube-root-ca.crt"], 60, "dependents collected")

    batch.create_namespaced_job(namespace, _job("sleeper", "import time; time.sleep(300)"))
    wait_for(
        lambda: core.list_namespaced_pod(namespace, label_selector="job-name=sleeper").items,
        60,
        "job pod created",
    )
    pod_name = core.list_namespaced_pod(namespace, label_selector="job-name=sleeper").items[0]
    wait_phase(core, namespace, pod_name.metadata.name, ("Running",))
    batch.delete_namespaced_job("sleeper", namespace, propagation_policy="Background")
    wait_for(
        lambda: not core.list_namespaced_pod(namespace, label_selector="job-name=sleeper").items,
        90,
        "job's pods collected",
    )


def test_pod_service_account_is_denied_what_its_role_does_not_grant(
    k8s_cluster: Cluster, core: client.CoreV1Api, api: client.ApiClient, namespace: str
) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "configmap-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    code = textwrap.dedent(
        """
        import json, os
        from kubernetes import client, config
        from kubernetes.client.rest import ApiException
        config.load_kube_config()
        core = client.CoreV1Api()
        ns = os.environ["POD_NS"]
        out = {}
        def attempt(name, call):
            try:
                call()
                out[name] = 200
            except ApiException as exc:
                out[name] = exc.status
        attempt("list_configmaps", lambda: core.list_namespaced_config_map(ns))
        attempt("list_secrets", lambda: core.list_namespaced_secret(ns))
        attempt("create_configmap", lambda: core.create_namespaced_config_map(
            ns, {"metadata": {"name": "not-allowed"}}))
        attempt("list_pods_everywhere", lambda: core.list_pod_for_all_namespaces())
        review = client.AuthenticationV1Api().create_self_subject_review({})
        out["user"] = review.status.user_info.username
        print("RBAC " + json.dumps(out), flush=True)
        """
    )
    manifest = python_pod(
        "rbac-probe",
        code,
        serviceAccountName="reader",
        env=[{"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
    )
    core.create_namespaced_pod(namespace, manifest)
    done = wait_phase(core, namespace, "rbac-probe", ("Succeeded", "Failed"), timeout=90)
    log = k8s_cluster.node.logs(namespace, "rbac-probe")
    assert done["status"]["phase"] == "Succeeded", log
    result = json.loads(log.split("RBAC ", 1)[1])
    assert result == {
        "list_configmaps": 200,
        "list_secrets": 403,
        "create_configmap": 403,
        "list_pods_everywhere": 403,
        "user": f"system:serviceaccount:{namespace}:reader",
    }
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("not-allowed", namespace)
