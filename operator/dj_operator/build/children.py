"""Builders of the job's children: recipe ConfigMap, claim, runner RBAC, runner pod, RayCluster,
the Ray pods' ServiceAccount and the job's NetworkPolicy. Every pod gets the restricted security
context (build/security.py) merged with the installation's and the job's own, and either the
claim (mounted at spec.storage.mountPath) or, on object storage, no data volume and the store's
environment (build/object_store.py)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from dj_operator.api import constants as c
from dj_operator.api.types import JobSpec
from dj_operator.build import names, object_store, security
from dj_runner import contract

Obj = dict[str, Any]


def recipe_config_map(job: Obj, recipe: Obj) -> Obj:
    """The recipe, as YAML, under key recipe.yaml. Relative paths stay relative: the runner's
    working directory is the storage mount, so they resolve under it."""
    text = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": names.metadata(
            job, names.config_map(job["metadata"]["name"]), c.COMPONENT_RECIPE
        ),
        "data": {c.RECIPE_KEY: text},
    }


def claim(job: Obj, spec: JobSpec) -> Obj:
    """The PersistentVolumeClaim from spec.storage.volumeClaimTemplate; owned by the job only
    when whenDeleted is Delete (otherwise it outlives the job, with the output on it)."""
    template = spec.storage.volume_claim_template or {}
    meta = names.metadata(
        job,
        names.claim(job["metadata"]["name"]),
        c.COMPONENT_STORAGE,
        owned=spec.storage.when_deleted == "Delete",
    )
    extra = template.get("metadata") or {}
    meta["labels"] = {**(extra.get("labels") or {}), **meta["labels"]}
    if extra.get("annotations"):
        meta["annotations"] = dict(extra["annotations"])
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


def runner_tolerations(spec: JobSpec) -> list[Obj]:
    """The runner pod's: the job's tolerations and the lost node's (`lost_node_tolerations`)."""
    return lost_node_tolerations(spec, spec.runner.tolerations)


def lost_node_tolerations(spec: JobSpec, own: tuple[Obj, ...] = ()) -> list[Obj]:
    """`own` tolerations, then a bounded one (`runner.nodeLostTolerationSeconds`) of each taint
    of a lost node that they do not tolerate already (Kubernetes would add 300 s ones)."""
    tolerations = copy.deepcopy(list(own))
    no_execute = [t for t in tolerations if t.get("effect") in (None, "", "NoExecute")]
    if any(not t.get("key") and t.get("operator") == "Exists" for t in no_execute):
        return tolerations  # the job tolerates every taint
    tolerated = {t.get("key") for t in no_execute}
    for key in c.NODE_LOST_TAINTS:
        if key not in tolerated:
            tolerations.append(
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": spec.runner.node_lost_toleration_seconds,
                }
            )
    return tolerations


def runner_termination_grace(spec: JobSpec) -> int:
    """The runner pod's terminationGracePeriodSeconds: its checkpoint grace plus 10 s."""
    return spec.runner.grace_period_seconds + 10


def claim_name(job: Obj, spec: JobSpec) -> str | None:
    """The claim the job's pods mount; None on object storage (no claim at all)."""
    if spec.storage.object_store is not None:
        return None
    return spec.storage.claim_name or names.claim(job["metadata"]["name"])


def runner_service_account(job: Obj, spec: JobSpec) -> str:
    """What the runner pod runs as: the job's own `<job>-runner`, or the workload identity's."""
    return object_store.identity(spec) or names.service_account(job["metadata"]["name"])


def ray_pod_service_account(job: Obj, spec: JobSpec) -> str:
    """What the Ray pods run as: the token-less `<job>-ray`, or the workload identity's."""
    return object_store.identity(spec) or names.ray_service_account(job["metadata"]["name"])


def runner_rbac(job: Obj, identity: str | None = None) -> list[Obj]:
    """ServiceAccount, Role and RoleBinding: the runner may only patch its own job's status (it
    writes status.progress), nothing else. RBAC cannot narrow a patch to one field of the
    status: see docs/operator.md. With a workload identity (`identity`, the ServiceAccount the
    runner pod then runs as) the binding names that ServiceAccount too."""
    name = job["metadata"]["name"]
    sa = names.service_account(name)
    ns = job["metadata"]["namespace"]
    subjects = [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]
    if identity is not None:
        subjects.append({"kind": "ServiceAccount", "name": identity, "namespace": ns})
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": names.metadata(job, sa, c.COMPONENT_RBAC),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": names.metadata(job, sa, c.COMPONENT_RBAC),
            "rules": [
                {
                    "apiGroups": [contract.GROUP],
                    "resources": [f"{contract.PLURAL}/status"],
                    "resourceNames": [name],
                    "verbs": ["patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": names.metadata(job, sa, c.COMPONENT_RBAC),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
            "subjects": subjects,
        },
    ]


def ray_address(job: Obj, spec: JobSpec) -> str | None:
    if spec.ray.mode == c.MODE_EXTERNAL:
        return spec.ray.address
    if spec.ray.mode == c.MODE_KUBERAY:
        cluster = names.ray_cluster(job["metadata"]["name"])
        ns = job["metadata"]["namespace"]
        head = f"{cluster}{contract.RAY_HEAD_SERVICE_SUFFIX}"
        return f"ray://{head}.{ns}.svc:{spec.ray.head_group.ports.client}"
    return None


def runner_args(job: Obj, spec: JobSpec, work_dir: str) -> list[str]:
    meta = job["metadata"]
    args = [
        "run",
        c.RECIPE_PATH,
        "--work-dir",
        work_dir,
        "--job-id",
        names.job_id(meta["namespace"], meta["name"], meta["uid"]),
        "--wait-for-lock",
        str(spec.runner.wait_for_lock_seconds),
        "--grace-period",
        str(spec.runner.grace_period_seconds),
    ]
    address = ray_address(job, spec)
    if address:
        args += ["--ray-address", address]
    if spec.runner.metrics_port:
        args += ["--metrics-port", str(spec.runner.metrics_port), "--metrics-host", "0.0.0.0"]
    return args


def _storage_mounts(spec: JobSpec) -> list[Obj]:
    """The claim's mount ([] on object storage)."""
    mount = spec.storage.mount
    return [] if mount is None else [{"name": c.DATA_VOLUME, "mountPath": mount}]


def _storage_volumes(job: Obj, spec: JobSpec) -> list[Obj]:
    """The claim as a pod volume ([] on object storage) and the web-identity token, if any."""
    claim = claim_name(job, spec)
    volumes = object_store.token_volumes(spec)
    if claim is not None:
        volumes.insert(0, {"name": c.DATA_VOLUME, "persistentVolumeClaim": {"claimName": claim}})
    return volumes


def runner_pod(job: Obj, spec: JobSpec, attempt: int, work_dir: str) -> Obj:
    """The runner pod of attempt `attempt` (from 1): restartPolicy Never, owned by the job."""
    meta = job["metadata"]
    runner = spec.runner
    env = [
        {"name": contract.ENV_JOB_NAME, "value": meta["name"]},
        {"name": contract.ENV_JOB_NAMESPACE, "value": meta["namespace"]},
    ]
    if spec.ray.mode == c.MODE_KUBERAY:
        # The runner waits for the head and every worker to join Ray, as long as the operator
        # waits for the cluster: after a lost head the old workers rejoin only once their
        # raylets have given up on the old GCS (about a minute), while KubeRay says `ready`.
        nodes = 1 + sum(group.replicas for group in spec.ray.worker_groups)
        env += [
            {"name": contract.ENV_RAY_MIN_NODES, "value": str(nodes)},
            {
                "name": contract.ENV_RAY_CONNECT_TIMEOUT,
                "value": str(spec.ray.ready_timeout_seconds),
            },
        ]
    env += object_store.env(spec)
    env += copy.deepcopy(list(runner.env))
    container: Obj = {
        "name": c.RUNNER_CONTAINER,
        "image": runner.image,
        "command": list(runner.command),
        "args": runner_args(job, spec, work_dir),
        "workingDir": spec.storage.mount or c.NO_VOLUME_WORKING_DIR,
        "env": env,
        "volumeMounts": [
            *_storage_mounts(spec),
            *object_store.token_mounts(spec),
            {"name": c.RECIPE_VOLUME, "mountPath": c.RECIPE_DIR, "readOnly": True},
            *copy.deepcopy(list(runner.volume_mounts)),
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if runner.metrics_port:
        container["ports"] = [
            {
                "name": contract.METRICS_PORT_NAME,
                "containerPort": runner.metrics_port,
                "protocol": "TCP",
            }
        ]
    # A writable /tmp (Ray's sockets and spill, HOME and TMPDIR of the image) that works with a
    # read-only root filesystem, unless the job mounts its own.
    own_tmp = not any(m.get("mountPath", "").rstrip("/") == "/tmp" for m in runner.volume_mounts)
    if own_tmp:
        container["volumeMounts"].append({"name": c.TMP_VOLUME, "mountPath": "/tmp"})
    if runner.image_pull_policy:
        container["imagePullPolicy"] = runner.image_pull_policy
    if runner.resources:
        container["resources"] = copy.deepcopy(runner.resources)
    container["securityContext"] = security.container_context(runner.security_context)
    inits = []
    for init in runner.init_containers:
        init = copy.deepcopy(init)
        mounts = init.setdefault("volumeMounts", [])
        if not any(m.get("name") == c.DATA_VOLUME for m in mounts):
            mounts[:0] = _storage_mounts(spec)
        # The runner's context (the installation's and the job's), then the init container's.
        init["securityContext"] = security.container_context(
            runner.security_context, init.get("securityContext")
        )
        inits.append(init)
    pod_spec: Obj = {
        "restartPolicy": "Never",
        "serviceAccountName": runner_service_account(job, spec),
        "terminationGracePeriodSeconds": runner_termination_grace(spec),
        "containers": [container],
        "volumes": [
            *_storage_volumes(job, spec),
            {
                "name": c.RECIPE_VOLUME,
                "configMap": {"name": names.config_map(meta["name"])},
            },
            *copy.deepcopy(list(runner.volumes)),
        ],
    }
    if own_tmp:
        pod_spec["volumes"].append({"name": c.TMP_VOLUME, "emptyDir": {}})
    if object_store.identity(spec) is not None:
        # The runner reports its progress with its API token, also under a workload identity
        # whose ServiceAccount does not automount one.
        pod_spec["automountServiceAccountToken"] = True
    if inits:
        pod_spec["initContainers"] = inits
    if runner.node_selector:
        pod_spec["nodeSelector"] = dict(runner.node_selector)
    pod_spec["tolerations"] = runner_tolerations(spec)
    pod_spec["securityContext"] = security.pod_context(runner.pod_security_context)
    pod_meta = names.metadata(
        job,
        names.runner_pod(meta["name"], attempt),
        contract.COMPONENT_RUNNER,
        **{contract.LABEL_ATTEMPT: str(attempt)},
    )
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}


def _ray_container(name: str, image: str, resources: Obj, ports: list[Obj], spec: JobSpec) -> Obj:
    container: Obj = {
        "name": name,
        "image": image,
        "env": [
            {"name": c.RAY_DRAIN_TIMEOUT_ENV, "value": str(c.RAY_DRAIN_TIMEOUT_SECONDS)},
            *object_store.env(spec),
        ],
        # Ray's sessions, sockets and spill under /tmp (RAY_TMPDIR), writable under a read-only
        # root filesystem.
        "volumeMounts": [
            *_storage_mounts(spec),
            *object_store.token_mounts(spec),
            {"name": c.TMP_VOLUME, "mountPath": "/tmp"},
        ],
        # KubeRay copies it onto the wait-gcs-ready init container it adds to workers.
        "securityContext": security.container_context(spec.runner.security_context),
    }
    if name == "ray-head":
        container["env"].append({"name": c.GRPC_FORK_SUPPORT_ENV, "value": "false"})
    if resources:
        container["resources"] = copy.deepcopy(resources)
    if ports:
        container["ports"] = ports
    return container


def _ray_pod_template(job: Obj, spec: JobSpec, container: Obj, volumes: list[Obj]) -> Obj:
    """A Ray pod: the job's label (what its NetworkPolicy selects), the Ray ServiceAccount (or
    the workload identity's) without an API token, the restricted pod security context."""
    name = job["metadata"]["name"]
    return {
        "metadata": {
            "labels": {
                c.LABEL_NAME: c.APP_NAME,
                contract.LABEL_COMPONENT: c.COMPONENT_RAY_NODE,
                contract.LABEL_JOB: names.fit(name),
            },
            "annotations": {c.ANNOTATION_JOB: name},
        },
        "spec": {
            "serviceAccountName": ray_pod_service_account(job, spec),
            "automountServiceAccountToken": False,
            "securityContext": security.pod_context(spec.runner.pod_security_context),
            "containers": [container],
            "volumes": copy.deepcopy(volumes),
            "terminationGracePeriodSeconds": c.RAY_POD_GRACE_SECONDS,
            "tolerations": lost_node_tolerations(spec),
        },
    }


def ray_service_account(job: Obj) -> Obj:
    """The Ray pods' identity: no Role is bound to it and no token is mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": names.metadata(
            job, names.ray_service_account(job["metadata"]["name"]), c.COMPONENT_RAY_NODE
        ),
        "automountServiceAccountToken": False,
    }


def _metrics_ports(spec: JobSpec) -> list[int]:
    """The ports a scraper reads: the runner's and, in kuberay mode, every Ray node's."""
    ports = {spec.runner.metrics_port} if spec.runner.metrics_port else set()
    if spec.ray.mode == c.MODE_KUBERAY:
        groups = [spec.ray.head_group.ray_start_params]
        groups += [group.ray_start_params for group in spec.ray.worker_groups]
        for params in groups:
            text = params.get("metrics-export-port", str(c.DEFAULT_RAY_METRICS_PORT))
            if text.isdigit() and 0 < int(text) <= 65535:
                ports.add(int(text))
    return sorted(ports)


def network_policy(job: Obj, spec: JobSpec, metrics_from: tuple[Obj, ...] = ()) -> Obj:
    """Ingress to the job's pods (the runner and the Ray nodes) only from the job's own pods,
    on any port (Ray's nodes talk on many); the metrics ports also from `metrics_from`
    (NetworkPolicyPeers; empty: from anywhere). Egress is not restricted."""
    selector = {"matchLabels": {contract.LABEL_JOB: names.fit(job["metadata"]["name"])}}
    ingress: list[Obj] = [{"from": [{"podSelector": copy.deepcopy(selector)}]}]
    ports = _metrics_ports(spec)
    if ports:
        rule: Obj = {"ports": [{"port": port, "protocol": "TCP"} for port in ports]}
        if metrics_from:
            rule["from"] = copy.deepcopy(list(metrics_from))
        ingress.append(rule)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": names.metadata(
            job, names.network_policy(job["metadata"]["name"]), c.COMPONENT_NETWORK
        ),
        "spec": {"podSelector": selector, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def ray_cluster(job: Obj, spec: JobSpec) -> Obj:
    """The ray.io/v1 RayCluster of kuberay mode: head and worker groups, all mounting the claim
    (on object storage: no data volume, the store's environment on every Ray container).
    Every Ray pod drains for at most RAY_DRAIN_TIMEOUT_SECONDS on SIGTERM and has a grace period
    of RAY_POD_GRACE_SECONDS (see constants): removing the cluster takes seconds, not Ray's 30 s
    drain timeout against a GCS that is already gone."""
    ray = spec.ray
    image = ray.image or spec.runner.image
    volumes = [*_storage_volumes(job, spec), {"name": c.TMP_VOLUME, "emptyDir": {}}]
    ports = ray.head_group.ports
    head_params = {
        "dashboard-host": c.DEFAULT_DASHBOARD_HOST,
        "port": str(ports.gcs),
        "ray-client-server-port": str(ports.client),
        "dashboard-port": str(ports.dashboard),
        **ray.head_group.ray_start_params,
    }
    head_ports = [
        {"name": "gcs-server", "containerPort": ports.gcs},
        {"name": "client", "containerPort": ports.client},
        {"name": "dashboard", "containerPort": ports.dashboard},
    ]
    workers = [
        {
            "groupName": group.name,
            "replicas": group.replicas,
            "minReplicas": group.min_replicas,
            "maxReplicas": group.max_replicas,
            "rayStartParams": dict(group.ray_start_params),
            "template": _ray_pod_template(
                job, spec, _ray_container("ray-worker", image, group.resources, [], spec), volumes
            ),
        }
        for group in ray.worker_groups
    ]
    cluster_spec: Obj = {
        "rayVersion": ray.ray_version,
        "headGroupSpec": {
            "rayStartParams": head_params,
            "template": _ray_pod_template(
                job,
                spec,
                _ray_container("ray-head", image, ray.head_group.resources, head_ports, spec),
                volumes,
            ),
        },
    }
    if workers:
        cluster_spec["workerGroupSpecs"] = workers
    return {
        "apiVersion": c.RAY_API_VERSION,
        "kind": c.RAY_KIND,
        "metadata": names.metadata(
            job, names.ray_cluster(job["metadata"]["name"]), c.COMPONENT_RAY
        ),
        "spec": cluster_spec,
    }


def ray_cluster_ready(cluster: Obj | None) -> bool:
    """Whether the runner may start on the cluster: KubeRay's head pod is ready (HeadPodReady;
    `state: ready` stays after the head dies), the cluster was provisioned (`state: ready` or
    RayClusterProvisioned) and every desired worker pod is ready (KubeRay reports `ready` as
    soon as the pods run; the runner then waits for their Ray nodes)."""
    if not cluster:
        return False
    status = cluster.get("status") or {}
    conds = {cond.get("type"): cond.get("status") for cond in status.get("conditions") or []}
    if conds.get("HeadPodReady") != "True":
        return False
    if status.get("state") != "ready" and conds.get("RayClusterProvisioned") != "True":
        return False
    desired = status.get("desiredWorkerReplicas", 0) or 0
    return (status.get("readyWorkerReplicas", 0) or 0) >= desired
