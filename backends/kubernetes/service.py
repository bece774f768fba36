"""KubernetesService: informers for the configured namespaces feeding an in-memory store;
``poll()`` only reads that store, so a refresh costs no API request at all."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from backends.config import SfopsConfig
from backends.kubernetes.client import (
    Connection,
    KubeApiError,
    KubeClient,
    KubeError,
    KubeUnavailable,
)
from backends.kubernetes.config import KubernetesConfig
from backends.kubernetes.contract import ALL_NAMESPACES
from backends.kubernetes.informer import (
    BUDGETS,
    DEPLOYMENTS,
    EVENTS,
    NODES,
    PODS,
    REPLICASETS,
    Informer,
    Resource,
)
from backends.kubernetes.kubeconfig import connection_from_kubeconfig
from backends.kubernetes.model import (
    ClusterStatus,
    ProbeCache,
    Workloads,
    build_status,
    build_workloads,
    summarize_status,
)
from backends.kubernetes.objects import (
    BudgetInfo,
    DeploymentInfo,
    EventInfo,
    NodeInfo,
    PodInfo,
    ReplicaSetInfo,
    budget_from_json,
    deployment_from_json,
    event_from_json,
    node_from_json,
    pod_from_json,
    replicaset_from_json,
    utcnow,
)
from backends.resilience import CircuitBreaker
from backends.secrets import redact_known
from backends.service import (
    CONTACT_TIMEOUT,
    BackendSummary,
    BackendUnreachable,
    summary_for_failure,
)
from backends.snapshot import Snapshot

# Watch cluster-wide (filtering client-side) beyond this many namespaces: a handful of long
# watches instead of six per namespace.
CLUSTER_WIDE_ABOVE = 4
FIRST_SYNC_WAIT = 4.0  # a poll waits this long for the first LIST, then shows what it has
# The pods' first LIST asks for this many first (then pages of 500): a screenful (60 lines),
# decoded in milliseconds on the loop, where a full first page is 2-3.5 MB of JSON.
FIRST_PODS_PAGE = 50
THREAD_BUILD_PODS = 1000  # from this many pods a snapshot rebuild runs in a worker thread
CONTACT_SHARE = 0.9  # of contact_timeout: the /readyz request's own timeout


class KubernetesService:
    """:class:`~backends.service.BackendService` for one cluster (one kubeconfig context)."""

    name = "kubernetes"
    title = "Kubernetes"
    contact_timeout = CONTACT_TIMEOUT

    def __init__(self, config: KubernetesConfig, client: KubeClient, *,
                 request_timeout: float = 10.0, read_only: bool = False,
                 operator_connection: Callable[[], Connection] | None = None) -> None:
        self.config = config
        # Every read (informers, /readyz) goes through ``client``: the read-only identity
        # where one is configured. Actions get :meth:`operator_client`.
        self.client = client
        self.read_only = read_only
        self._operator_connection = operator_connection
        self._operator_client: KubeClient | None = None
        self.request_timeout = request_timeout
        self.breaker: CircuitBreaker | None = CircuitBreaker(
            "kubernetes", failure_threshold=3, reset_timeout=10.0,
            is_failure=lambda exc: isinstance(exc, KubeUnavailable),
        )
        all_namespaces = any(ns in ALL_NAMESPACES for ns in config.namespaces)
        self.namespaces: tuple[str, ...] = () if all_namespaces else tuple(config.namespaces)
        self.version = 0  # bumped on every store change
        self._probe_cache: ProbeCache = {}
        self._workloads: Workloads | None = None
        self._workloads_key_built: tuple[int, ...] = ()
        self._build_lock = asyncio.Lock()
        self._assembled: ClusterStatus | None = None
        self._assembled_key: tuple[object, ...] = ()
        self.deployments: list[Informer[DeploymentInfo]] = []
        self.replicasets: list[Informer[ReplicaSetInfo]] = []
        self.pods: list[Informer[PodInfo]] = []
        self.budgets: list[Informer[BudgetInfo]] = []
        self.events: list[Informer[EventInfo]] = []
        self.nodes: Informer[NodeInfo] = Informer(client, NODES, None, node_from_json,
                                                  on_change=self._changed)
        self._started = False
        self._start_rest: asyncio.Task[None] | None = None
        # A live screen sets this: while the first LIST runs, a poll waits this long for it,
        # then returns what has arrived (``synced`` False). None: a poll waits for the sync.
        self.partial_wait: float | None = None
        self._first_view_returned = False

    # ------------------------------------------------------------------ informers

    def _scopes(self) -> list[str | None]:
        if not self.namespaces or len(self.namespaces) > CLUSTER_WIDE_ABOVE:
            return [None]
        return list(self.namespaces)

    def _wanted(self, namespace: str) -> bool:
        return not self.namespaces or namespace in self.namespaces

    def _informer(self, resource: Resource, scope: str | None, convert: Any,
                  params: dict[str, str] | None = None, *,
                  first_page: int | None = None) -> Informer[Any]:
        keep = (lambda item: True) if scope is not None or not self.namespaces else (
            lambda item: self._wanted(item.namespace))
        return Informer(self.client, resource, scope, convert, on_change=self._changed,
                        params=params, keep=keep, request_timeout=max(30.0, self.request_timeout),
                        first_page=first_page)

    def start(self) -> None:
        """Start the informers (idempotent); they run on the current event loop."""
        if self._started:
            return
        self._started = True
        for scope in self._scopes():
            self.deployments.append(self._informer(DEPLOYMENTS, scope, deployment_from_json))
            self.replicasets.append(self._informer(REPLICASETS, scope, replicaset_from_json))
            self.pods.append(self._informer(PODS, scope, pod_from_json,
                                            first_page=FIRST_PODS_PAGE))
            self.budgets.append(self._informer(BUDGETS, scope, budget_from_json))
            self.events.append(self._informer(EVENTS, scope, event_from_json,
                                              {"fieldSelector": "type=Warning"}))
        # What the first screenful needs starts first; the rest (500 nodes are a page as big
        # as a full page of pods, the events and budgets) once that is in, so it does not
        # compete for the API server and this process's CPU with the first rows.
        for informer in self._first_view_informers():
            informer.start()
        self._start_rest = asyncio.create_task(self._start_after_first_view(),
                                               name="kubernetes:start-rest")

    def _first_view_informers(self) -> list[Informer[Any]]:
        return [*self.deployments, *self.replicasets, *self.pods]

    def _first_view(self) -> list[asyncio.Event]:
        """Set when the first screenful can be drawn: the Deployments and ReplicaSets (small
        lists that give the pods their place) listed, the pods' first (small) page in."""
        return [i.first_page_in if i in self.pods else i.synced
                for i in self._first_view_informers()]

    async def _wait_first_view(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_SYNC_WAIT):
                await asyncio.gather(*(event.wait() for event in self._first_view()))

    async def _start_after_first_view(self) -> None:
        await self._wait_first_view()  # bounded: a failing pods' LIST delays nothing long
        first = self._first_view_informers()
        for informer in self.informers:
            if informer not in first:
                informer.start()

    @property
    def informers(self) -> list[Informer[Any]]:
        return [*self.deployments, *self.replicasets, *self.pods, *self.budgets, *self.events,
                self.nodes]

    def _changed(self) -> None:
        self.version += 1

    async def wait_synced(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until every informer has listed once; False on timeout."""
        self.start()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(i.synced.wait() for i in self.informers))
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ BackendService

    async def contact(self) -> None:
        """The API server answers ``/readyz`` now. The informers cannot tell: a watch on a
        hung (SIGSTOPped) API server receives nothing, exactly like a quiet one. ``/readyz``
        also fails when etcd is gone, when the store can no longer be kept current.

        The failure names the API server: the request's own timeout is a little shorter than
        the caller's contact budget, so a hung server is reported here, with its host."""
        try:
            await self.client.request("GET", "/readyz",
                                      timeout=self.contact_timeout * CONTACT_SHARE,
                                      verb="readyz", what="GET /readyz")
        except KubeApiError as exc:
            failed = [line[3:].split(":")[0] for line in exc.message.splitlines()
                      if line.startswith("[-]")]
            detail = ", ".join(failed) + " failed" if failed else str(exc)
            raise BackendUnreachable(f"{self.client.host}: API server not ready: {detail}"
                                     ) from None
        except KubeError as exc:
            raise BackendUnreachable(f"API server {self.client.host}: {exc}") from None
        # The server answers: watches waiting out a backoff from its outage reopen now.
        for informer in self.informers:
            informer.retry_now()

    async def poll(self) -> ClusterStatus:
        first = not self._started
        self.start()
        if first or not all(i.synced.is_set() for i in self.informers):
            if self.partial_wait is None:
                await self.wait_synced(FIRST_SYNC_WAIT)
            else:
                await self._wait_partial(self.partial_wait)
        unsynced = [i for i in self.informers if not i.synced.is_set()]
        failing = [i for i in self.informers if i.error is not None]
        if unsynced and failing:
            # Never listed and failing: nothing trustworthy to show.
            raise KubeUnavailable(f"{self.client.host}: {failing[0].error}")
        if failing and all(not i.connected for i in self.informers):
            raise KubeUnavailable(f"{self.client.host}: {failing[0].error}")
        return await self.current_async()

    async def _wait_partial(self, wait: float) -> None:
        """The first such poll returns as soon as the first screenful can be drawn
        (:meth:`_first_view`, up to FIRST_SYNC_WAIT); later ones wait up to ``wait`` for the
        rest, then show what has arrived."""
        if not self._first_view_returned:
            await self._wait_first_view()
            self._first_view_returned = True
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await asyncio.gather(*(i.synced.wait() for i in self.informers))

    def _workloads_key(self) -> tuple[int, ...]:
        informers: list[Informer[Any]] = [*self.deployments, *self.replicasets, *self.pods,
                                          *self.events]
        return tuple(i.version for i in informers)

    def _workload_inputs(self) -> dict[str, Any]:
        # Plain list copies (fast, on the loop): the build may then run in a worker thread
        # while watch events keep changing the stores.
        return {"deployments": _values(self.deployments),
                "replicasets": _values(self.replicasets), "pods": _values(self.pods),
                "events": _values(self.events), "probe_cache": self._probe_cache}

    def current(self) -> ClusterStatus:
        """The snapshot value from the stores, built inline (CLI, tests)."""
        key = self._workloads_key()
        if self._workloads is None or key != self._workloads_key_built:
            self._workloads = build_workloads(now=utcnow(), **self._workload_inputs())
            self._workloads_key_built = key
        return self._assemble(self._workloads)

    async def current_async(self) -> ClusterStatus:
        """As :meth:`current`, but a big rebuild runs in a worker thread: a 5,000-pod cluster
        must not stall the UI's event loop. Pods are re-grouped only when pods, ReplicaSets,
        Deployments or events changed, never for a node heartbeat."""
        async with self._build_lock:
            key = self._workloads_key()
            if self._workloads is None or key != self._workloads_key_built:
                inputs = self._workload_inputs()
                if len(inputs["pods"]) >= THREAD_BUILD_PODS:
                    self._workloads = await asyncio.to_thread(
                        lambda: build_workloads(now=utcnow(), **inputs))
                else:
                    self._workloads = build_workloads(now=utcnow(), **inputs)
                self._workloads_key_built = key
            return self._assemble(self._workloads)

    def _assemble(self, workloads: Workloads) -> ClusterStatus:
        # Redacted as they enter the status: an API server (or a proxy) may quote the
        # credentials it was sent back in its error.
        errors = [redact_known(f"{i.name}: {i.error}") for i in self.informers
                  if i.error is not None]
        synced = all(i.synced.is_set() for i in self.informers)
        key = (id(workloads), self.nodes.version, *(b.version for b in self.budgets), synced)
        if not errors and self._assembled is not None and key == self._assembled_key:
            return self._assembled  # unchanged: the same object (the UI skips its redraw)
        status = self._build(workloads, errors)
        self._assembled, self._assembled_key = (status, key) if not errors else (None, ())
        return status

    def _build(self, workloads: Workloads, errors: list[str]) -> ClusterStatus:
        now_mono = time.monotonic()
        broken_since = [i.error_since for i in self.informers if i.error_since is not None]
        age = now_mono - min(broken_since) if broken_since else 0.0
        syncing = sorted({i.resource.name for i in self.informers if not i.synced.is_set()})
        return build_status(
            host=self.client.host,
            namespaces=self.namespaces or ("*",),
            nodes=list(self.nodes.items.values()),
            budgets=_values(self.budgets),
            now=utcnow(),
            workloads=workloads,
            syncing=syncing,
            watch_errors=errors,
            data_age_s=age,
        )

    def summarize(self, snapshot: Snapshot[Any]) -> BackendSummary:
        status = snapshot.best
        if not isinstance(status, ClusterStatus):
            return summary_for_failure(self.name, self.title, snapshot)
        summary = summarize_status(status, self.title, self.name)
        if snapshot.error:
            return BackendSummary(
                name=summary.name, title=summary.title, health=summary.health,
                figures=summary.figures, alerts=summary.alerts, spark_label=summary.spark_label,
                spark_value=summary.spark_value, error=snapshot.error,
            )
        return summary

    def operator_client(self) -> KubeClient:
        """The client actions change things with: the operator identity
        (``operator_kubeconfig``, else ``kubeconfig``), read on first use. Read-only mode
        never loads it: it raises :class:`~backends.actions.ReadOnlyError`."""
        if self.read_only:
            from backends.actions import ReadOnlyError

            raise ReadOnlyError("kubernetes: sfops is in read-only mode; the operator "
                                "identity is not loaded")
        if self._operator_connection is None:
            return self.client  # one identity for all (no separate one configured)
        if self._operator_client is None:
            self._operator_client = KubeClient(self._operator_connection(),
                                               timeout=self.client.timeout)
        return self._operator_client

    async def close(self) -> None:
        start_rest, self._start_rest = self._start_rest, None
        if start_rest is not None:
            start_rest.cancel()
            await asyncio.gather(start_rest, return_exceptions=True)
        await asyncio.gather(*(i.stop() for i in self.informers), return_exceptions=True)
        await self.client.close()
        operator, self._operator_client = self._operator_client, None
        if operator is not None:
            await operator.close()


def _values(informers: Sequence[Informer[Any]]) -> list[Any]:
    out: list[Any] = []
    for informer in informers:
        out.extend(informer.items.values())
    return out


def make_client(config: KubernetesConfig, *, kubeconfig: Any = None,
                context: str | None = None) -> KubeClient:
    connection = connection_from_kubeconfig(kubeconfig or config.kubeconfig,
                                            context or config.context)
    return KubeClient(connection)


def readonly_kubeconfig(section: KubernetesConfig) -> Path | None:
    """What every read uses, in every mode: the read-only identity when one is configured
    (least privilege: even a bug in a front end could not change anything, the API server
    would refuse it), else ``kubeconfig`` (None: the default kubeconfig)."""
    return section.readonly_kubeconfig or section.kubeconfig


def operator_kubeconfig(section: KubernetesConfig) -> Path | None:
    """What actions (and their Leases) use: ``operator_kubeconfig``, else ``kubeconfig``."""
    return section.operator_kubeconfig or section.kubeconfig


def build_service(config: SfopsConfig, *, context: str | None = None
                  ) -> KubernetesService | None:
    section = config.kubernetes
    if section is None:
        return None
    chosen_context = context or section.context
    reads = readonly_kubeconfig(section)
    try:
        client = make_client(section, kubeconfig=reads, context=chosen_context)
    except KubeError as exc:
        from backends.config import ConfigError

        raise ConfigError(f"{config.path}: kubernetes: {exc}") from exc
    acts = operator_kubeconfig(section)
    operator: Callable[[], Connection] | None = None
    if acts != reads:
        path = acts

        def operator() -> Connection:
            try:
                return connection_from_kubeconfig(path, chosen_context)
            except KubeError as exc:
                from backends.config import ConfigError

                raise ConfigError(f"{config.path}: kubernetes: operator_kubeconfig: {exc}"
                                  ) from exc

    return KubernetesService(section, client, read_only=config.sfops.read_only,
                             operator_connection=operator)
