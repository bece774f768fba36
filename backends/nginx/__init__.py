"""The nginx slice: upstream members from the configuration file, direct health probes,
stub_status, per-member traffic from the JSON access log; drain/undrain actions.

Declared in :mod:`.contract`; this package imports nothing (declaring must stay cheap)."""
