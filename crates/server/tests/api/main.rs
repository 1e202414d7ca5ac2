//! Integration tests: one binary, each module a part of the API, every test
//! against a real server from `spawn_app()`.

mod authz_matrix;
mod edge;
mod helpers;
mod keys;
mod lifecycle;
mod openapi;
mod tenants;
