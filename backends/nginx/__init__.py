"""The nginx slice: upstream members from the configuration file, direct health probes,
stub_status, per-member traffic from the JSON access log; drain/undrain actions."""

from backends.nginx.actions import DrainMember, NginxActionError, UndrainMember
from backends.nginx.model import MemberState, MemberStatus, NginxStatus, ProbeResult, StubStatus
from backends.nginx.service import NginxService, NginxUnreachable, build_service, summarize_status

__all__ = [
    "DrainMember",
    "MemberState",
    "MemberStatus",
    "NginxActionError",
    "NginxService",
    "NginxStatus",
    "NginxUnreachable",
    "ProbeResult",
    "StubStatus",
    "UndrainMember",
    "build_service",
    "summarize_status",
]
