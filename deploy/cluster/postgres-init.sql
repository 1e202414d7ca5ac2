-- The roles and databases tenantd expects (docs/configuration.md, pools):
-- an owner that applies migrations and may create tenants' databases, and
-- an application role that is neither owner, superuser nor BYPASSRLS.
CREATE ROLE tenantd_owner LOGIN CREATEDB PASSWORD 'owner-password';
CREATE ROLE tenantd_app LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'app-password';
CREATE DATABASE tenantd_catalog OWNER tenantd_owner;
CREATE DATABASE tenantd_data OWNER tenantd_owner;
