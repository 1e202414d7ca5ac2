-- The nodes serving this catalog, as each registers itself at start and
-- beats every few seconds: what an operator sees of the cluster.
CREATE TABLE nodes (
    id text PRIMARY KEY,
    name text NOT NULL,
    address text NOT NULL,
    version text NOT NULL,
    started_at bigint NOT NULL,
    heartbeat_at bigint NOT NULL,
    stopped_at bigint
);
