"""streamforge-api: the reference API service that nginx balances and Kubernetes runs.

Ships separately from sfops (it never imports ``backends`` or ``tui``). See README.md.
"""
