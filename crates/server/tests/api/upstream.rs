//! A real upstream service for gateway tests: an HTTP server on 127.0.0.1
//! that records what reached it and answers by path.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: HeaderMap,
}

#[derive(Debug, Default)]
struct Log {
    seen: Mutex<Vec<Seen>>,
    counter: AtomicUsize,
    connections: AtomicUsize,
    /// While set, every request is answered 500.
    failing: AtomicBool,
}

pub struct Upstream {
    pub url: String,
    log: Arc<Log>,
}

/// A listener that counts the connections it accepts.
struct Counting {
    inner: TcpListener,
    log: Arc<Log>,
}

impl axum::serve::Listener for Counting {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Ok(accepted) = self.inner.accept().await {
                self.log.connections.fetch_add(1, Ordering::SeqCst);
                return accepted;
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Upstream {
    pub async fn start() -> Self {
        let log = Arc::new(Log::default());
        let app = Router::new().fallback(answer).with_state(log.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counting = Counting {
            inner: listener,
            log: log.clone(),
        };
        tokio::spawn(async move { axum::serve(counting, app).await });
        Self { url, log }
    }

    /// Answers every request with 500 from now on (`true`) or no longer.
    pub fn fail(&self, failing: bool) {
        self.log.failing.store(failing, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.log.connections.load(Ordering::SeqCst)
    }

    /// Every request so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.log.seen.lock().unwrap().clone()
    }

    /// Requests so far whose target starts with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.target.starts_with(prefix))
            .count()
    }
}

/// Answers by the path's first segment (after any prefix `/base`):
/// - `echo`: 200 with the method and target;
/// - `cached`, `private`, `nostore`: a canary naming the tenant the request
///   came for and a counter, with `Cache-Control` `max-age=60`, `private,
///   max-age=60`, `no-store, max-age=60`;
/// - `brief`: the canary with `max-age=1`;
/// - `create`: 201 with `Location: /base/cached/created`;
/// - `fail-for-acme`: 500 for tenant acme, 200 for others;
/// - `unavailable`: 503; `slow`: 200 after 2 s;
/// - `upload`: reads the body as it streams and answers its length;
/// - `stall`: 100 bytes announced, 10 sent, the rest after 3 s;
/// - `download?bytes=N`: streams N bytes in 64 KiB chunks.
async fn answer(State(log): State<Arc<Log>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let path = parts.uri.path().trim_start_matches("/base");
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    let tenant = parts
        .headers
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // Count the body without holding it.
    let mut body_bytes = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    body_bytes += data.len() as u64;
                }
            }
            Err(_) => break,
        }
    }
    log.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
    });
    let n = log.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let canary = |cache_control: &'static str| {
        ([("cache-control", cache_control)], format!("{tenant}:{n}")).into_response()
    };
    if log.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    match first {
        "cached" => canary("max-age=60"),
        "brief" => canary("max-age=1"),
        "private" => canary("private, max-age=60"),
        "nostore" => canary("no-store, max-age=60"),
        "create" => (
            StatusCode::CREATED,
            [("location", "/base/cached/created")],
            "created",
        )
            .into_response(),
        "fail-for-acme" if tenant == "acme" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "slow".into_response()
        }
        "upload" => body_bytes.to_string().into_response(),
        "stall" => {
            // Ten bytes of a hundred, then nothing for 3 s.
            let chunks = futures_util::stream::unfold(0, |step| async move {
                match step {
                    0 => Some((
                        Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b's'; 10])),
                        1,
                    )),
                    1 => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        Some((Ok(axum::body::Bytes::from(vec![b's'; 90])), 2))
                    }
                    _ => None,
                }
            });
            ([("content-length", "100")], Body::from_stream(chunks)).into_response()
        }
        "download" => {
            let bytes: u64 = parts
                .uri
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let chunk = axum::body::Bytes::from(vec![b'x'; 64 * 1024]);
            let chunks = futures_chunks(bytes, chunk);
            Response::new(Body::from_stream(chunks))
        }
        _ => {
            axum::Json(json!({ "method": parts.method.as_str(), "target": target })).into_response()
        }
    }
}

/// `total` bytes as a stream of `chunk`s (the last one cut to fit).
fn futures_chunks(
    total: u64,
    chunk: axum::body::Bytes,
) -> impl futures_util::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    let size = chunk.len() as u64;
    futures_util::stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = size.min(total - sent);
            Some((Ok(chunk.slice(..n as usize)), sent + n))
        }
    })
}
