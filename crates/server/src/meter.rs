//! Meter: bytes in and out of every admitted request, counted as the bodies
//! stream, and the write-behind that moves usage from memory to the store at
//! least every `usage_flush_interval` (so a crash loses at most that much).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Frame, SizeHint};
use tenantd_core::plan::Metric;
use tenantd_core::quota::BillingDay;
use tenantd_core::TenantId;
use tokio::sync::watch;

use crate::admit::Admission;
use crate::state::AppState;

/// A body that counts its bytes and charges them to its tenant when dropped,
/// whether it was read to the end or not.
pub struct MeteredBody {
    inner: Body,
    bytes: u64,
    admission: Arc<Admission>,
    tenant: TenantId,
    billing_day: BillingDay,
    metric: Metric,
}

impl std::fmt::Debug for MeteredBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredBody")
            .field("bytes", &self.bytes)
            .field("tenant", &self.tenant)
            .field("metric", &self.metric)
            .finish_non_exhaustive()
    }
}

impl MeteredBody {
    pub fn new(
        inner: Body,
        admission: Arc<Admission>,
        tenant: TenantId,
        billing_day: BillingDay,
        metric: Metric,
    ) -> Self {
        Self {
            inner,
            bytes: 0,
            admission,
            tenant,
            billing_day,
            metric,
        }
    }
}

impl http_body::Body for MeteredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let (bytes, metric, day) = (self.bytes, self.metric, self.billing_day);
        let now = self.admission.clock().now();
        self.admission.ledgers.with(&self.tenant, |usage| {
            usage
                .ledger
                .charge(metric, bytes, day, now.unix_timestamp());
            usage.ledger_changed();
            usage.meter(now, |h| match metric {
                Metric::IngressBytes => h.ingress_bytes += bytes,
                _ => h.egress_bytes += bytes,
            });
        });
    }
}

/// Wraps the request's body so its bytes are charged as ingress.
pub fn meter_request(
    request: Request,
    admission: &Arc<Admission>,
    tenant: &TenantId,
    billing_day: BillingDay,
) -> Request {
    let (parts, body) = request.into_parts();
    let body = MeteredBody::new(
        body,
        admission.clone(),
        tenant.clone(),
        billing_day,
        Metric::IngressBytes,
    );
    Request::from_parts(parts, Body::new(body))
}

/// Writes usage every `every` until stopped, then once more.
pub async fn write_behind(state: AppState, every: Duration, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => flush(&state).await,
            _ = stopped.changed() => {
                flush(&state).await;
                return;
            }
        }
    }
}

/// Measures the storage of tenants that wrote, then writes one batch. On a
/// failed write the batch is kept for the next round.
pub async fn flush(state: &AppState) {
    let admission = &state.admission;
    let now = state.clock.now();
    let (mut batch, measure) = admission.ledgers.drain(now);
    let measured = !measure.is_empty();
    for scope in measure {
        match state.data.usage(&scope).await {
            Ok(usage) => admission.ledgers.with(scope.tenant(), |u| {
                u.ledger.set_level(
                    Metric::StorageBytes,
                    u64::try_from(usage.bytes).unwrap_or(0),
                );
                u.ledger
                    .set_level(Metric::Records, u64::try_from(usage.records).unwrap_or(0));
                u.ledger_changed();
            }),
            Err(e) => {
                // The pool's circuit logs a pool that is down, once.
                tracing::debug!(tenant = %scope.tenant(), error = %e, "could not measure storage; will retry");
                admission.ledgers.with(scope.tenant(), |u| {
                    u.measure_storage = Some(Box::new(scope.clone()))
                });
            }
        }
    }
    if measured {
        // The levels just measured go out with this write, not the next one:
        // at a shutdown there is no next one.
        let (levels, again) = admission.ledgers.drain(now);
        batch.append(levels);
        // Writes that came in meanwhile are measured next round.
        for scope in again {
            admission.ledgers.with(scope.tenant(), |u| {
                u.measure_storage = Some(Box::new(scope.clone()))
            });
        }
    }
    if batch.is_empty() {
        return;
    }
    // Through the catalog's circuit: a catalog that keeps failing (a full
    // disk) is logged once, tried again by one probe when due, and shows
    // in `/readyz`; meanwhile usage stays in memory, never dropped.
    let Ok(call) = state.catalog.dependency().enter() else {
        admission.ledgers.restore(batch);
        return;
    };
    match state.catalog.write_usage(&batch, now).await {
        Ok(()) => call.finish(Ok(())),
        Err(e) => {
            call.finish(Err(&e));
            tracing::debug!(error = %e, "could not write usage; will retry");
            admission.ledgers.restore(batch);
        }
    }
}
