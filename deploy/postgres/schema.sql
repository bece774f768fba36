-- Schema of the streamforge-api service. Applied once on the primary (the lab does it at
-- init; compose/Kubernetes run it as a migration job). The API itself never runs DDL.
CREATE TABLE IF NOT EXISTS events (
    id bigserial PRIMARY KEY,
    payload jsonb NOT NULL,
    served_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Write-path canaries (sfops verify, deploy/api/canary.py): POST /canary/{key} upserts the
-- key's row (a new token each time) and publishes it to Kafka; the consumer that receives it
-- sets consumed_at for that token. The next canary write deletes rows older than
-- SFAPI_CANARY_TTL, so the table stays small whoever writes canaries.
CREATE TABLE IF NOT EXISTS canary (
    key text PRIMARY KEY,
    token text NOT NULL,
    served_by text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    consumed_at timestamptz,
    consumed_by text
);
CREATE INDEX IF NOT EXISTS canary_written_at ON canary (written_at);
