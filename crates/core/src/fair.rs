//! Weighted fair queuing of requests over a global capacity of seats.
//!
//! Each tenant has a lane: a bounded queue, a weight, a cap on requests in
//! flight and a virtual finish time. A request asks for `width` seats and
//! is charged an estimated cost in seat-microseconds. Lanes are served in
//! order of start-time fair queuing (SFQ): a request's virtual start is the
//! later of the scheduler's virtual time and its lane's finish, and its
//! lane's finish then moves on by `cost / weight`. A lane that was idle
//! starts at the current virtual time, so idleness earns no credit to burst
//! with later. When a request completes, its lane's finish is corrected by
//! the difference between the measured and the charged cost.
//!
//! A lane lives only while its tenant has requests waiting or running, so
//! the scheduler's memory follows the active tenants, not all of them. A
//! lane that empties is forgotten, and its tenant's next request starts at
//! the virtual time: what it may have owed is at most its last request's
//! cost, the same allowance SFQ gives a flow whose queue empties.
//!
//! Whatever its weight, a lane holds at most `tenant_max_seats` seats at
//! once (the ceiling): seats held by requests that never finish, because
//! they wait on a hung client or a tenant's own database, must not add up
//! to the whole capacity. Kubernetes' API Priority and Fairness bounds each
//! flow's seats for the same reason: fair ordering decides who runs next,
//! but only a ceiling stops one flow's stuck requests from holding every
//! seat, after which nobody runs next at all.
//!
//! The lane at the front waits for enough free seats for its head request
//! rather than letting narrower requests pass it, so wide requests are never
//! starved. With nothing queued anywhere, an arrival that fits is granted at
//! once (the fast path). `Discipline::Fifo` keeps everything but the order,
//! which becomes arrival order: the control the fairness tests compare with.
//!
//! No clock and no I/O: the caller passes costs and measures time, so the
//! scheduler is tested by simulation on a fake clock.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::Hash;

// Tenant ids reach the scheduler only after verification, so a fast keyed
// hash is enough; SipHash's flood resistance is not needed here.
use foldhash::fast::RandomState;

/// Virtual time units per seat-microsecond at weight 1; keeps `cost/weight`
/// exact enough for weights up to 1000.
const SCALE: u128 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discipline {
    /// Weighted fair queuing across tenants.
    #[default]
    Fair,
    /// One queue in arrival order, for comparison.
    Fifo,
}

/// What one request asks of the scheduler, with its tenant's current policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// Seats held while it is served.
    pub width: u32,
    /// Estimated cost in seat-microseconds.
    pub cost: u64,
    /// The tenant's weight (at least 1).
    pub weight: u32,
    /// Most requests of the tenant served at once (at least 1).
    pub cap: u32,
    /// Most requests of the tenant waiting at once.
    pub max_queue: u32,
}

/// A request allowed to run. Hand it back to `complete` when it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub ticket: u64,
    lane: usize,
    pub width: u32,
    /// The cost charged at dispatch, in seat-microseconds.
    pub charged: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Granted at once: nothing was waiting and a seat was free.
    Granted(Grant),
    /// Waiting; its grant comes out of a later `dispatch`.
    Queued(u64),
    /// The tenant's queue is full.
    Full,
}

#[derive(Debug)]
struct Waiting {
    ticket: u64,
    width: u32,
    cost: u64,
}

#[derive(Debug)]
struct Lane<K> {
    tenant: K,
    weight: u32,
    cap: u32,
    in_flight: u32,
    /// Seats held by its requests in flight.
    seats_held: u32,
    finish: u128,
    queue: VecDeque<Waiting>,
    /// Its entry in `ready`, while it has one.
    ready_key: Option<(u128, u64)>,
}

impl<K> Lane<K> {
    /// Whether another request `width` seats wide may start: under the
    /// tenant's cap on requests, and within its seat ceiling (a request
    /// wider than the ceiling runs alone).
    fn may_start(&self, width: u32, ceiling: u32) -> bool {
        self.in_flight < self.cap && (self.seats_held == 0 || self.seats_held + width <= ceiling)
    }
}

/// The scheduler. `K` names a tenant.
#[derive(Debug)]
pub struct FairQueue<K> {
    discipline: Discipline,
    capacity: u32,
    /// Most seats one lane holds at once.
    tenant_max_seats: u32,
    in_use: u32,
    vtime: u128,
    next_ticket: u64,
    lanes: Vec<Option<Lane<K>>>,
    free_lanes: Vec<usize>,
    index: HashMap<K, usize, RandomState>,
    /// Lanes with a queued head that may run (below their cap), by key.
    ready: BTreeSet<(u128, u64, usize)>,
    queued: usize,
}

impl<K: Clone + Eq + Hash> FairQueue<K> {
    /// A scheduler of `capacity` seats in which one tenant holds them all
    /// if no one else asks; see `with_tenant_ceiling` to bound that.
    pub fn new(capacity: u32, discipline: Discipline) -> Self {
        Self::with_tenant_ceiling(capacity, capacity, discipline)
    }

    /// A scheduler of `capacity` seats of which one tenant holds at most
    /// `tenant_max_seats` at once (at least 1, at most `capacity`).
    pub fn with_tenant_ceiling(
        capacity: u32,
        tenant_max_seats: u32,
        discipline: Discipline,
    ) -> Self {
        let capacity = capacity.max(1);
        Self {
            discipline,
            capacity,
            tenant_max_seats: tenant_max_seats.clamp(1, capacity),
            in_use: 0,
            vtime: 0,
            next_ticket: 0,
            lanes: Vec::new(),
            free_lanes: Vec::new(),
            index: HashMap::default(),
            ready: BTreeSet::new(),
            queued: 0,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Most seats one tenant holds at once.
    pub fn tenant_max_seats(&self) -> u32 {
        self.tenant_max_seats
    }

    /// Seats held by requests being served.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Requests waiting, over all tenants.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Tenants the scheduler holds state for.
    pub fn lanes(&self) -> usize {
        self.index.len()
    }

    /// A request arrives for `tenant`.
    pub fn arrive(&mut self, tenant: &K, ask: Ask) -> Arrival {
        let width = ask.width.clamp(1, self.capacity);
        let lane_id = self.lane_for(tenant);
        let lane = self.lanes[lane_id].as_mut().expect("indexed lanes exist");
        lane.weight = ask.weight.max(1);
        lane.cap = ask.cap.max(1);
        let free = self.capacity - self.in_use;
        if self.ready.is_empty()
            && lane.queue.is_empty()
            && width <= free
            && lane.may_start(width, self.tenant_max_seats)
        {
            let ticket = self.take_ticket();
            return Arrival::Granted(self.start(lane_id, ticket, width, ask.cost));
        }
        if lane.queue.len() >= ask.max_queue as usize {
            self.forget_if_idle(lane_id);
            return Arrival::Full;
        }
        let ticket = self.take_ticket();
        let lane = self.lanes[lane_id].as_mut().expect("indexed lanes exist");
        lane.queue.push_back(Waiting {
            ticket,
            width,
            cost: ask.cost,
        });
        self.queued += 1;
        if lane.queue.len() == 1 {
            self.make_ready(lane_id);
        }
        Arrival::Queued(ticket)
    }

    /// Grants every waiting request that can run now, in fair order.
    pub fn dispatch(&mut self) -> Vec<Grant> {
        let mut grants = Vec::new();
        while let Some(&(_, _, lane_id)) = self.ready.first() {
            let lane = self.lanes[lane_id].as_ref().expect("ready lanes exist");
            let head = lane.queue.front().expect("ready lanes have a head");
            if head.width > self.capacity - self.in_use {
                break;
            }
            self.unready(lane_id);
            let lane = self.lanes[lane_id].as_mut().expect("ready lanes exist");
            let Waiting {
                ticket,
                width,
                cost,
            } = lane.queue.pop_front().expect("ready lanes have a head");
            self.queued -= 1;
            grants.push(self.start(lane_id, ticket, width, cost));
            self.make_ready(lane_id);
        }
        grants
    }

    /// A granted request finished, having cost `actual` seat-microseconds.
    /// Call `dispatch` afterwards: seats were freed.
    pub fn complete(&mut self, grant: Grant, actual: u64) {
        self.in_use -= grant.width;
        let Some(lane) = self.lanes[grant.lane].as_mut() else {
            return;
        };
        lane.in_flight -= 1;
        lane.seats_held -= grant.width;
        let weight = u128::from(lane.weight);
        let (more, less) = (
            u128::from(actual.saturating_sub(grant.charged)),
            u128::from(grant.charged.saturating_sub(actual)),
        );
        lane.finish = (lane.finish + more * SCALE / weight).saturating_sub(less * SCALE / weight);
        self.unready(grant.lane);
        self.make_ready(grant.lane);
        self.forget_if_idle(grant.lane);
    }

    /// Takes a waiting request out of its tenant's queue (its client left or
    /// its wait ran out). `false` if it is not waiting: it was granted.
    pub fn cancel(&mut self, tenant: &K, ticket: u64) -> bool {
        let Some(&lane_id) = self.index.get(tenant) else {
            return false;
        };
        let lane = self.lanes[lane_id].as_mut().expect("indexed lanes exist");
        let Some(position) = lane.queue.iter().position(|w| w.ticket == ticket) else {
            return false;
        };
        lane.queue.remove(position);
        self.queued -= 1;
        if position == 0 {
            self.unready(lane_id);
            self.make_ready(lane_id);
        }
        self.forget_if_idle(lane_id);
        true
    }

    /// Drops a lane with nothing waiting and nothing running.
    fn forget_if_idle(&mut self, lane_id: usize) {
        let idle = self.lanes[lane_id]
            .as_ref()
            .is_some_and(|lane| lane.queue.is_empty() && lane.in_flight == 0);
        if idle {
            if let Some(lane) = self.lanes[lane_id].take() {
                self.index.remove(&lane.tenant);
                self.free_lanes.push(lane_id);
            }
        }
    }

    fn take_ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn lane_for(&mut self, tenant: &K) -> usize {
        if let Some(&id) = self.index.get(tenant) {
            return id;
        }
        let lane = Lane {
            tenant: tenant.clone(),
            weight: 1,
            cap: 1,
            in_flight: 0,
            seats_held: 0,
            finish: self.vtime,
            queue: VecDeque::new(),
            ready_key: None,
        };
        let id = match self.free_lanes.pop() {
            Some(id) => {
                self.lanes[id] = Some(lane);
                id
            }
            None => {
                self.lanes.push(Some(lane));
                self.lanes.len() - 1
            }
        };
        self.index.insert(tenant.clone(), id);
        id
    }

    fn start(&mut self, lane_id: usize, ticket: u64, width: u32, cost: u64) -> Grant {
        let lane = self.lanes[lane_id]
            .as_mut()
            .expect("lanes being started exist");
        let start = lane.finish.max(self.vtime);
        lane.finish = start + u128::from(cost) * SCALE / u128::from(lane.weight);
        lane.in_flight += 1;
        lane.seats_held += width;
        self.vtime = self.vtime.max(start);
        self.in_use += width;
        Grant {
            ticket,
            lane: lane_id,
            width,
            charged: cost,
        }
    }

    /// Puts a lane in `ready` if it has a head and room under its cap and
    /// its seat ceiling.
    fn make_ready(&mut self, lane_id: usize) {
        let vtime = self.vtime;
        let discipline = self.discipline;
        let ceiling = self.tenant_max_seats;
        let Some(lane) = self.lanes[lane_id].as_mut() else {
            return;
        };
        if lane.ready_key.is_some() {
            return;
        }
        let Some(head) = lane.queue.front() else {
            return;
        };
        if !lane.may_start(head.width, ceiling) {
            return;
        }
        let key = match discipline {
            Discipline::Fair => (lane.finish.max(vtime), head.ticket),
            Discipline::Fifo => (0, head.ticket),
        };
        lane.ready_key = Some(key);
        self.ready.insert((key.0, key.1, lane_id));
    }

    fn unready(&mut self, lane_id: usize) {
        if let Some(lane) = self.lanes[lane_id].as_mut() {
            if let Some((a, b)) = lane.ready_key.take() {
                self.ready.remove(&(a, b, lane_id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(width: u32, cost: u64) -> Ask {
        Ask {
            width,
            cost,
            weight: 1,
            cap: 100,
            max_queue: 10,
        }
    }

    fn granted(a: Arrival) -> Grant {
        match a {
            Arrival::Granted(g) => g,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uncontended_requests_take_the_fast_path() {
        let mut q = FairQueue::new(2, Discipline::Fair);
        let a = granted(q.arrive(&"a", ask(1, 10)));
        let b = granted(q.arrive(&"b", ask(1, 10)));
        assert_eq!(q.in_use(), 2);
        assert!(matches!(q.arrive(&"c", ask(1, 10)), Arrival::Queued(_)));
        q.complete(a, 10);
        let grants = q.dispatch();
        assert_eq!(grants.len(), 1);
        q.complete(b, 10);
        q.complete(grants[0], 10);
        assert_eq!((q.in_use(), q.queued()), (0, 0));
    }

    #[test]
    fn a_tenant_that_used_more_waits_behind_one_that_used_less() {
        let mut q = FairQueue::new(1, Discipline::Fair);
        let first = granted(q.arrive(&"heavy", ask(1, 100)));
        assert!(matches!(
            q.arrive(&"heavy", ask(1, 100)),
            Arrival::Queued(_)
        ));
        let Arrival::Queued(light) = q.arrive(&"light", ask(1, 100)) else {
            panic!()
        };
        q.complete(first, 100);
        assert_eq!(
            q.dispatch()[0].ticket,
            light,
            "light arrived later but is owed"
        );
        let mut fifo = FairQueue::new(1, Discipline::Fifo);
        let first = granted(fifo.arrive(&"heavy", ask(1, 100)));
        let Arrival::Queued(heavy_fifo) = fifo.arrive(&"heavy", ask(1, 100)) else {
            panic!()
        };
        fifo.arrive(&"light", ask(1, 100));
        fifo.complete(first, 100);
        assert_eq!(fifo.dispatch()[0].ticket, heavy_fifo);
    }

    #[test]
    fn queues_are_bounded_and_cancelled_requests_leave_them() {
        let mut q = FairQueue::new(1, Discipline::Fair);
        let running = granted(q.arrive(&"a", ask(1, 1)));
        let bounded = Ask {
            max_queue: 2,
            ..ask(1, 1)
        };
        let Arrival::Queued(t1) = q.arrive(&"a", bounded) else {
            panic!()
        };
        assert!(matches!(q.arrive(&"a", bounded), Arrival::Queued(_)));
        assert_eq!(q.arrive(&"a", bounded), Arrival::Full);
        assert!(q.cancel(&"a", t1));
        assert!(!q.cancel(&"a", t1), "cancelled once");
        assert!(matches!(q.arrive(&"a", bounded), Arrival::Queued(_)));
        assert_eq!(q.queued(), 2);
        q.complete(running, 1);
        let next = q.dispatch();
        assert_eq!(next.len(), 1);
        assert!(
            !q.cancel(&"a", next[0].ticket),
            "a granted request is not waiting"
        );
    }

    #[test]
    fn the_concurrency_cap_holds_a_tenant_back_but_not_others() {
        let mut q = FairQueue::new(4, Discipline::Fair);
        let capped = Ask {
            cap: 1,
            ..ask(1, 1)
        };
        let a1 = granted(q.arrive(&"a", capped));
        let Arrival::Queued(a2) = q.arrive(&"a", capped) else {
            panic!()
        };
        // Seats are free but `a` is at its cap; `b` goes ahead at once.
        assert!(q.dispatch().is_empty());
        granted(q.arrive(&"b", capped));
        q.complete(a1, 1);
        let after_a = q.dispatch();
        assert_eq!(after_a.len(), 1);
        assert_eq!(after_a[0].ticket, a2);
    }

    #[test]
    fn the_seat_ceiling_holds_a_tenant_back_but_not_others() {
        let mut q = FairQueue::with_tenant_ceiling(8, 4, Discipline::Fair);
        let held: Vec<Grant> = (0..2).map(|_| granted(q.arrive(&"a", ask(2, 1)))).collect();
        // Four seats are free, but `a` holds its ceiling of four.
        let Arrival::Queued(a3) = q.arrive(&"a", ask(2, 1)) else {
            panic!()
        };
        assert!(q.dispatch().is_empty());
        assert_eq!(q.in_use(), 4);
        // Another tenant takes the free seats at once.
        granted(q.arrive(&"b", ask(2, 1)));
        granted(q.arrive(&"b", ask(2, 1)));
        assert_eq!(q.in_use(), 8);
        q.complete(held[0], 1);
        assert_eq!(
            q.dispatch()[0].ticket,
            a3,
            "a runs again once under its ceiling"
        );
        // A request wider than the ceiling still runs, alone.
        let mut narrow = FairQueue::with_tenant_ceiling(8, 1, Discipline::Fair);
        let wide = granted(narrow.arrive(&"c", ask(3, 1)));
        assert!(matches!(narrow.arrive(&"c", ask(1, 1)), Arrival::Queued(_)));
        narrow.complete(wide, 1);
        assert_eq!(narrow.dispatch().len(), 1);
    }

    #[test]
    fn a_wide_request_at_the_front_waits_for_its_seats_and_is_not_passed() {
        let mut q = FairQueue::new(4, Discipline::Fair);
        let n1 = granted(q.arrive(&"narrow", ask(1, 1)));
        let n2 = granted(q.arrive(&"narrow", ask(1, 1)));
        let n3 = granted(q.arrive(&"narrow", ask(1, 1)));
        let Arrival::Queued(wide) = q.arrive(&"wide", ask(4, 4)) else {
            panic!()
        };
        q.arrive(&"narrow", ask(1, 1));
        // One seat is free, but the wide request is first in fair order.
        assert!(q.dispatch().is_empty());
        for g in [n1, n2, n3] {
            q.complete(g, 1);
        }
        let grants = q.dispatch();
        assert_eq!(grants[0].ticket, wide);
        assert_eq!(q.in_use(), 4);
    }

    #[test]
    fn lanes_live_only_while_their_tenant_has_requests() {
        let mut q = FairQueue::new(1, Discipline::Fair);
        let g = granted(q.arrive(&"a", ask(1, 1_000)));
        assert_eq!(q.lanes(), 1);
        let Arrival::Queued(waiting) = q.arrive(&"b", ask(1, 1_000)) else {
            panic!()
        };
        q.complete(g, 1_000);
        assert_eq!(q.lanes(), 1, "a is forgotten, b waits");
        assert!(q.cancel(&"b", waiting));
        assert_eq!(q.lanes(), 0);
        let full = Ask {
            max_queue: 0,
            ..ask(1, 1)
        };
        let held = granted(q.arrive(&"c", ask(1, 1)));
        assert_eq!(q.arrive(&"d", full), Arrival::Full);
        assert_eq!(q.lanes(), 1, "a refused tenant leaves no lane");
        q.complete(held, 1);
        assert_eq!(q.lanes(), 0);
    }
}
