-- Schema of the streamforge-api service. Applied once on the primary (the lab does it at
-- init; compose/Kubernetes run it as a migration job). The API itself never runs DDL.
CREATE TABLE IF NOT EXISTS events (
    id bigserial PRIMARY KEY,
    payload jsonb NOT NULL,
    served_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
