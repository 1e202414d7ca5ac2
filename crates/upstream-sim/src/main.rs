//! upstream-sim: the service the benchmarks put tenantd, nginx and HAProxy
//! in front of. Each request waits for one of `--concurrency` slots, holds
//! it for `--service-time` (`--heavy-factor` times that on `/heavy`), and
//! answers 200 with a short body, so the upstream has a known capacity:
//! concurrency / service time requests a second.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
#[command(about = "A stand-in upstream with a fixed service time and bounded concurrency")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// How long one request holds its slot.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    service_time: Duration,
    /// Requests served at once; the rest wait in arrival order.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How many times the service time a request to `/heavy` takes.
    #[arg(long, default_value_t = 20)]
    heavy_factor: u32,
}

#[derive(Debug)]
struct Upstream {
    slots: Semaphore,
    service_time: Duration,
    heavy_factor: u32,
}

impl Upstream {
    async fn serve(&self, times: u32) -> &'static str {
        // No service time is an answer at once: even a zero sleep waits for
        // the timer's next millisecond tick.
        if self.service_time.is_zero() {
            return "ok\n";
        }
        // The semaphore is never closed, so a permit always comes.
        let _slot = self.slots.acquire().await;
        tokio::time::sleep(self.service_time * times).await;
        "ok\n"
    }
}

async fn light(State(upstream): State<Arc<Upstream>>) -> &'static str {
    upstream.serve(1).await
}

async fn heavy(State(upstream): State<Arc<Upstream>>) -> &'static str {
    upstream.serve(upstream.heavy_factor).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let upstream = Arc::new(Upstream {
        slots: Semaphore::new(args.concurrency),
        service_time: args.service_time,
        heavy_factor: args.heavy_factor,
    });
    let app = Router::new()
        .route("/heavy", get(heavy))
        .fallback(get(light))
        .with_state(upstream);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    axum::serve(listener, app).await
}
