"""Every configured backend as a :class:`~backends.service.BackendService`.

Slices are imported lazily and only when their section is configured: a slice that is not part
of this build (its module is missing) is skipped, and one backend's heavy client library is
never loaded for a user who does not configure it.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from backends.config import SfopsConfig
from backends.service import BackendService

log = logging.getLogger(__name__)

# Overview order: front door first, then what it depends on.
SLICES = (
    ("nginx", "backends.nginx"),
    ("postgres", "backends.postgres"),
    ("kafka", "backends.kafka"),
    ("kubernetes", "backends.kubernetes"),
)


def build_services(config: SfopsConfig) -> list[BackendService]:
    services: list[BackendService] = []
    for section, module_name in SLICES:
        if getattr(config, section, None) is None:
            continue
        try:
            module: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # the slice exists but one of *its* imports is missing: a real bug
            log.info("backend %s is configured but not part of this build", section)
            continue
        service = module.build_service(config)
        if service is not None:
            services.append(service)
    return services
