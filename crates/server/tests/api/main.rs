//! Integration tests: one binary, each module a part of the API, every test
//! against a real server from `spawn_app()`.

// Helpers outside #[test] functions fail loudly too: a panic is the report.
#![allow(clippy::unwrap_used)]

mod admission;
mod authz_matrix;
mod catalog;
mod contract;
mod data;
mod docs;
mod edge;
mod faults;
mod gateway;
mod helpers;
mod keys;
mod lifecycle;
mod limiter;
mod moves;
mod openapi;
mod policy;
mod shared_quotas;
mod tenants;
mod tls;
mod upstream;
