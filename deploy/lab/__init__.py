"""The local lab: the deploy/ stack as real processes on 127.0.0.1 (see README, "The lab")."""
