"""Every configured backend as a :class:`~backends.service.BackendService`, in the registry's
order. A backend whose section is absent builds no service, and its client library is never
loaded (each contract names its service lazily)."""

from __future__ import annotations

from backends.config import SfopsConfig
from backends.registry import backends
from backends.service import BackendService


def build_services(config: SfopsConfig) -> list[BackendService]:
    services: list[BackendService] = []
    for backend in backends():
        service = backend.build_service(config)
        if service is not None:
            services.append(service)
    return services
