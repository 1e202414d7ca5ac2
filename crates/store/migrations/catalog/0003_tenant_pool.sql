-- The storage pool holding a tenant's data; its region must be the tenant's.
ALTER TABLE tenants ADD COLUMN pool TEXT NOT NULL DEFAULT 'default';
