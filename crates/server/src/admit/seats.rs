//! Seats: the fair queue put to work. A request asks for seats and either
//! gets them at once, waits in its tenant's queue until the scheduler grants
//! them, or is refused (queue full, or waited past its budget). A waiting
//! request whose client goes away leaves the queue; a seat is given back
//! when its holder is dropped, however the request ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tenantd_core::fair::{Arrival, Ask, Discipline, FairQueue, Grant};
use tenantd_core::TenantId;
use tokio::sync::oneshot;
// Tokio's clock, so that tests can pause time.
use tokio::time::Instant;

#[derive(Debug)]
pub struct Seats {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    queue: FairQueue<TenantId>,
    waiting: HashMap<u64, oneshot::Sender<Grant>>,
}

/// Why a request got no seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its tenant's queue is full.
    QueueFull,
    /// It waited its whole budget.
    Overloaded,
}

/// Seats held by one request; given back on drop.
#[derive(Debug)]
pub struct Seat {
    seats: Arc<Seats>,
    grant: Option<Grant>,
    started: Instant,
    /// Time spent waiting for the seat.
    pub waited: Duration,
}

impl Seat {
    pub fn width(&self) -> u32 {
        self.grant.map_or(0, |g| g.width)
    }

    /// Time since the seat was granted.
    pub fn held(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            let actual = u64::from(grant.width).saturating_mul(
                u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            );
            let mut inner = self.seats.lock();
            inner.queue.complete(grant, actual);
            inner.dispatch();
        }
    }
}

/// A request waiting for a seat. Dropped before it is granted (the client
/// left), it takes the request out of the queue; if the grant raced in, the
/// seats go straight back.
struct Waiter {
    seats: Arc<Seats>,
    tenant: TenantId,
    ticket: u64,
    grant: Option<oneshot::Receiver<Grant>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let Some(mut receiver) = self.grant.take() else {
            return;
        };
        let mut inner = self.seats.lock();
        if inner.queue.cancel(&self.tenant, self.ticket) {
            inner.waiting.remove(&self.ticket);
        } else if let Ok(grant) = receiver.try_recv() {
            inner.queue.complete(grant, 0);
            inner.dispatch();
        }
    }
}

impl Inner {
    /// Grants what can run and wakes its waiters.
    fn dispatch(&mut self) {
        loop {
            let grants = self.queue.dispatch();
            if grants.is_empty() {
                return;
            }
            for grant in grants {
                let undelivered = match self.waiting.remove(&grant.ticket) {
                    Some(sender) => sender.send(grant).err(),
                    None => Some(grant),
                };
                if let Some(grant) = undelivered {
                    // Its waiter is gone: the seats go back at once.
                    self.queue.complete(grant, 0);
                }
            }
        }
    }
}

impl Seats {
    /// `capacity` seats, which one tenant may take all of.
    pub fn new(capacity: u32, discipline: Discipline) -> Arc<Self> {
        Self::with_tenant_ceiling(capacity, capacity, discipline)
    }

    /// `capacity` seats of which one tenant holds at most `tenant_max_seats`.
    pub fn with_tenant_ceiling(
        capacity: u32,
        tenant_max_seats: u32,
        discipline: Discipline,
    ) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                queue: FairQueue::with_tenant_ceiling(capacity, tenant_max_seats, discipline),
                waiting: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Seats for one request of `tenant`, waiting at most `budget`.
    pub async fn acquire(
        self: &Arc<Self>,
        tenant: &TenantId,
        ask: Ask,
        budget: Duration,
    ) -> Result<Seat, Refusal> {
        let arrived = Instant::now();
        let (ticket, receiver) = {
            let mut inner = self.lock();
            match inner.queue.arrive(tenant, ask) {
                // Granted on arrival: it started when it arrived.
                Arrival::Granted(grant) => return Ok(self.seat(grant, arrived, arrived)),
                Arrival::Full => return Err(Refusal::QueueFull),
                Arrival::Queued(ticket) => {
                    // The channel is made only for requests that wait, so the
                    // fast path allocates nothing.
                    let (sender, receiver) = oneshot::channel();
                    inner.waiting.insert(ticket, sender);
                    // A seat may be free while the head of the queue waits
                    // for more; the newcomer never jumps it, but dispatch
                    // decides that, not this function.
                    inner.dispatch();
                    (ticket, receiver)
                }
            }
        };
        let mut waiter = Waiter {
            seats: self.clone(),
            tenant: tenant.clone(),
            ticket,
            grant: Some(receiver),
        };
        let receiver = waiter.grant.as_mut().expect("set above");
        match tokio::time::timeout(budget, receiver).await {
            Ok(Ok(grant)) => {
                waiter.grant = None;
                Ok(self.seat(grant, arrived, Instant::now()))
            }
            // The sender is only dropped after a send or a cancel, both
            // under the lock; treat anything else as no seat.
            Ok(Err(_)) => {
                waiter.grant = None;
                Err(Refusal::Overloaded)
            }
            Err(_) => {
                let mut inner = self.lock();
                if inner.queue.cancel(tenant, ticket) {
                    inner.waiting.remove(&ticket);
                    waiter.grant = None;
                    return Err(Refusal::Overloaded);
                }
                drop(inner);
                // Granted just as the budget ran out: take it.
                let granted = waiter.grant.take().and_then(|mut r| r.try_recv().ok());
                granted
                    .map(|grant| self.seat(grant, arrived, Instant::now()))
                    .ok_or(Refusal::Overloaded)
            }
        }
    }

    fn seat(self: &Arc<Self>, grant: Grant, arrived: Instant, started: Instant) -> Seat {
        Seat {
            seats: self.clone(),
            grant: Some(grant),
            started,
            waited: started - arrived,
        }
    }

    /// Seats in use, requests waiting, and the capacity.
    pub fn load(&self) -> (u32, usize, u32) {
        let inner = self.lock();
        (
            inner.queue.in_use(),
            inner.queue.queued(),
            inner.queue.capacity(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(width: u32) -> Ask {
        Ask {
            width,
            cost: 1000,
            weight: 1,
            cap: 100,
            max_queue: 2,
        }
    }

    fn tenant(name: &str) -> TenantId {
        TenantId::parse(name).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_seat_goes_to_the_next_waiter() {
        let seats = Seats::new(1, Discipline::Fair);
        let held = seats
            .acquire(&tenant("acme"), ask(1), Duration::from_secs(1))
            .await
            .unwrap();
        let waiter = {
            let seats = seats.clone();
            tokio::spawn(async move {
                seats
                    .acquire(&tenant("globex"), ask(1), Duration::from_secs(1))
                    .await
                    .map(|seat| seat.waited)
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(seats.load(), (1, 1, 1));
        drop(held);
        let waited = waiter.await.unwrap().unwrap();
        assert_eq!(waited, Duration::from_millis(300));
        assert_eq!(
            seats.load(),
            (0, 0, 1),
            "the waiter's seat went back when it was dropped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_past_the_budget_is_refused_and_leaves_the_queue() {
        let seats = Seats::new(1, Discipline::Fair);
        let _held = seats
            .acquire(&tenant("acme"), ask(1), Duration::from_secs(1))
            .await
            .unwrap();
        let refused = seats
            .acquire(&tenant("globex"), ask(1), Duration::from_millis(250))
            .await;
        assert_eq!(refused.err(), Some(Refusal::Overloaded));
        assert_eq!(seats.load(), (1, 0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_tenant_queue_refuses_at_once_and_an_abandoned_wait_leaves() {
        let seats = Seats::new(1, Discipline::Fair);
        let held = seats
            .acquire(&tenant("acme"), ask(1), Duration::from_secs(1))
            .await
            .unwrap();
        let mut waiting = Vec::new();
        for _ in 0..2 {
            let seats = seats.clone();
            waiting.push(tokio::spawn(async move {
                seats
                    .acquire(&tenant("acme"), ask(1), Duration::from_secs(10))
                    .await
                    .map(|_| ())
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let full = seats
            .acquire(&tenant("acme"), ask(1), Duration::from_secs(10))
            .await;
        assert_eq!(full.err(), Some(Refusal::QueueFull));
        // Another tenant's queue is its own.
        let other = {
            let seats = seats.clone();
            tokio::spawn(async move {
                seats
                    .acquire(&tenant("globex"), ask(1), Duration::from_secs(10))
                    .await
                    .map(|_| ())
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(seats.load().1, 3);
        // Clients that go away leave the queue at once.
        for task in &waiting {
            task.abort();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(seats.load().1, 1);
        drop(held);
        assert_eq!(other.await.unwrap(), Ok(()));
        assert_eq!(seats.load(), (0, 0, 1));
    }
}
