"""The Kubernetes slice: Deployments, ReplicaSets, Pods, Nodes, PodDisruptionBudgets and
Warning events kept current by list + watch; rollout and node actions.

Declared in :mod:`.contract`; this package imports nothing (declaring must stay cheap: the
client library loads only when a service or an action is built)."""
