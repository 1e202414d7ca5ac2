-- Where a tenant's data lives: shared tables (pooled), a schema of its own, or
-- a database of its own. Fixed at creation; moves come later as verified jobs.
ALTER TABLE tenants ADD COLUMN isolation TEXT NOT NULL DEFAULT 'pooled'
    CHECK (isolation IN ('pooled', 'schema', 'dedicated'));
