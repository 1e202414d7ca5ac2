//! tenantd's server: the HTTP edge, the identify, admit, route and meter
//! stages, and the background work that goes with them.
//!
//! `Server::start` opens the store and bootstraps it; `Server::run` serves a
//! listener until a shutdown future resolves, then drains and flushes.
#![forbid(unsafe_code)]

pub mod admit;
pub mod app;
pub mod config;
mod edge;
mod extract;
pub mod gateway;
mod identify;
mod meter;
mod metrics;
mod parse_errors;
mod problem;
mod routes;
mod serve;
mod start;
mod state;
pub mod telemetry;
mod tls;

pub use routes::{route_table, Access, RouteSpec};
pub use start::{recover_operator_key, Server, StartError, CATALOG_FILE};

/// The OpenAPI document the server publishes at `/openapi.json`.
pub fn openapi_json() -> String {
    use utoipa::OpenApi;
    routes::ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_default()
}
