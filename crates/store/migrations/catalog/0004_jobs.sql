-- Asynchronous jobs, such as moving a tenant's data to another placement.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('move')),
    state       TEXT NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    step        TEXT NOT NULL,
    details     TEXT NOT NULL,      -- JSON: where from and where to
    error       TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX jobs_by_tenant ON jobs (tenant_id, created_at);

-- At most one running job per tenant.
CREATE UNIQUE INDEX jobs_one_running ON jobs (tenant_id) WHERE state = 'running';
