"""How the four layers depend on each other: which API pod or worker serves which nginx member,
what the API needs (the PostgreSQL primary, its Kafka topics), where things run (Kubernetes
nodes). Pure functions over the backends' latest statuses plus the small ``[topology]``
mapping for what the data cannot show; used for the likely causes in "What is wrong now"
(:mod:`backends.topology.causes`) and the blast radius in preflights
(:mod:`backends.topology.blast`)."""
