-- Pooled tenant data on PostgreSQL. Every table is keyed by tenant_id and
-- guarded a second time by row-level security, ENABLEd and FORCEd so that
-- it binds the tables' owner too. The application connects as a role that
-- is neither owner, superuser nor BYPASSRLS (checked at start).
--
-- The tenant is set per transaction with set_config('app.tenant_id', $1, true).
-- The policies read it once per query through a subselect; when it is unset
-- it is NULL or '', which no row matches: access fails closed.

CREATE SCHEMA IF NOT EXISTS tenantd;

CREATE TABLE tenantd.collections (
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    indexes     jsonb NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE tenantd.records (
    tenant_id   text NOT NULL,
    collection  text NOT NULL,
    id          text NOT NULL,
    version     bigint NOT NULL CHECK (version > 0),
    body        jsonb NOT NULL,
    size        bigint NOT NULL,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL,
    PRIMARY KEY (tenant_id, collection, id),
    FOREIGN KEY (tenant_id, collection) REFERENCES tenantd.collections (tenant_id, name) ON DELETE CASCADE
);

CREATE TABLE tenantd.usage (
    tenant_id   text PRIMARY KEY,
    bytes       bigint NOT NULL CHECK (bytes >= 0),
    records     bigint NOT NULL CHECK (records >= 0)
);

ALTER TABLE tenantd.collections ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantd.collections FORCE ROW LEVEL SECURITY;
ALTER TABLE tenantd.records ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantd.records FORCE ROW LEVEL SECURITY;
ALTER TABLE tenantd.usage ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantd.usage FORCE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenantd.collections
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));
CREATE POLICY tenant_isolation ON tenantd.records
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));
CREATE POLICY tenant_isolation ON tenantd.usage
    USING (tenant_id = (SELECT current_setting('app.tenant_id', true)))
    WITH CHECK (tenant_id = (SELECT current_setting('app.tenant_id', true)));
