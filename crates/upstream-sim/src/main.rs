//! upstream-sim: the service the benchmarks put tenantd, nginx and HAProxy
//! in front of. Each request waits for one of `--concurrency` slots, holds
//! it for `--service-time` (`--heavy-factor` times that on `/heavy`), and
//! answers 200 with a short body, so the upstream has a known capacity:
//! concurrency / service time requests a second.
//!
//! With `--forward-to`, it is instead the plainest reverse proxy on hyper:
//! hyper's HTTP/1 server and hyper-util's pooled client, each request sent
//! on as it came, on the multi-threaded runtime tenantd runs on. It has no
//! tenancy, limits or rewriting: it is the floor of what a gateway built on
//! this stack can cost per request.

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
    /// Forward every request to this address instead of answering it.
    #[arg(long)]
    forward_to: Option<SocketAddr>,
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

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    match args.forward_to {
        Some(upstream) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(forward(args.listen, upstream)),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(answer(args)),
    }
}

/// Forwards each request to `upstream`, path and headers as they came.
async fn forward(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    use hyper::body::Incoming;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build_http();
    let authority = upstream.to_string();
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (client, authority) = (client.clone(), authority.clone());
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            let target = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned();
            let uri = hyper::Uri::builder()
                .scheme("http")
                .authority(authority.as_str())
                .path_and_query(target)
                .build();
            let client = client.clone();
            async move {
                *request.uri_mut() = uri.map_err(ForwardError::Uri)?;
                client
                    .request(request)
                    .await
                    .map_err(ForwardError::Upstream)
            }
        });
        tokio::spawn(async move {
            // A client that goes away mid-request ends only its connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Why a request could not be forwarded; hyper closes its connection.
#[derive(Debug)]
enum ForwardError {
    Uri(hyper::http::Error),
    Upstream(hyper_util::client::legacy::Error),
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uri(e) => write!(f, "the path cannot be forwarded: {e}"),
            Self::Upstream(e) => write!(f, "the upstream failed: {e}"),
        }
    }
}

impl std::error::Error for ForwardError {}

async fn answer(args: Args) -> std::io::Result<()> {
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
