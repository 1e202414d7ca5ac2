-- Admission and metering: billing days, quota ledgers, hourly usage, quota
-- events and add-ons. Usage belongs to the tenant, never to a key.

ALTER TABLE tenants ADD COLUMN billing_day INTEGER NOT NULL DEFAULT 1
    CHECK (billing_day BETWEEN 1 AND 28);

-- Each tenant's quota ledger as last written behind (JSON). The admission
-- stage keeps the live copy in memory and writes it at least every second.
CREATE TABLE usage_ledgers (
    tenant_id   TEXT PRIMARY KEY,
    ledger      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;

-- Metered usage per tenant and hour (the hour's start, Unix seconds). Each
-- write-behind adds what was metered since the previous one.
CREATE TABLE usage_hours (
    tenant_id     TEXT NOT NULL,
    hour          INTEGER NOT NULL,
    requests      INTEGER NOT NULL,
    rejected      INTEGER NOT NULL,
    ingress_bytes INTEGER NOT NULL,
    egress_bytes  INTEGER NOT NULL,
    seat_micros   INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, hour)
) STRICT, WITHOUT ROWID;

-- Soft limits passed and grace periods started, once per quota and window.
CREATE TABLE quota_events (
    seq         INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    metric      TEXT NOT NULL,
    period      TEXT,
    used        INTEGER NOT NULL,
    limit_value INTEGER NOT NULL
) STRICT;

CREATE INDEX quota_events_by_tenant ON quota_events (tenant_id, seq);

-- Temporary raises of one quota, until `expires_at`.
CREATE TABLE tenant_addons (
    id          INTEGER PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    metric      TEXT NOT NULL,
    period      TEXT,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX tenant_addons_by_tenant ON tenant_addons (tenant_id, expires_at);
