-- Tenants whose data moved away from this schema: a write still addressed
-- here (by a node that has not yet heard of the move) finds the tenant's row
-- and is refused, instead of landing in a copy nobody reads any more. Each
-- write transaction checks it, with the shared advisory lock a move holds
-- exclusively while it copies (`data::pg::PgDatabase::begin_write`).

CREATE TABLE departures (
    tenant_id   text COLLATE "C" PRIMARY KEY,
    -- Where the tenant went ("pool/isolation"), for whoever reads this table.
    moved_to    text NOT NULL,
    at          bigint NOT NULL
);

ALTER TABLE departures ENABLE ROW LEVEL SECURITY;
ALTER TABLE departures FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON departures
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));
