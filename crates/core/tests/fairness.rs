//! Fair-share tests of the scheduler: a discrete-event simulation on a fake
//! clock (microseconds), with the fair share defined as the weighted max-min
//! allocation of the delivered seat-time over the tenants' measured demand.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tenantd_core::fair::{Arrival, Ask, Discipline, FairQueue, Grant};

const MS: u64 = 1_000;
const SECOND: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
enum Load {
    /// Always keeps this many requests outstanding.
    Backlogged(u32),
    /// Arrivals at this rate (requests per second), jittered ±50 %.
    Rate(f64),
    /// One rate for the first half of the run, another for the second.
    Phased(f64, f64),
}

#[derive(Debug, Clone, Copy)]
struct TenantSpec {
    weight: u32,
    width: u32,
    service: u64,
    load: Load,
    cap: u32,
}

fn tenant(weight: u32, width: u32, service: u64, load: Load) -> TenantSpec {
    TenantSpec {
        weight,
        width,
        service,
        load,
        cap: u32::MAX,
    }
}

#[derive(Debug, Clone, Copy)]
struct Setup {
    capacity: u32,
    /// Most seats one tenant holds at once.
    tenant_max_seats: u32,
    discipline: Discipline,
    max_queue: u32,
    /// How long a request may wait before it is refused as overloaded.
    wait_budget: u64,
    duration: u64,
    /// Seat-time is measured from here to the end.
    measure_from: u64,
    /// The cost charged before any measurement, as the server's default.
    default_estimate: u64,
}

#[derive(Debug, Default, Clone)]
struct Outcome {
    seat_time: u64,
    /// Seat-time the tenant asked for in the measured span.
    demand: u64,
    full: u32,
    overloaded: u32,
    max_wait: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrive(usize),
    Complete(usize, u64, u64, u64),
    GiveUp(usize, u64),
}

struct Sim {
    setup: Setup,
    tenants: Vec<TenantSpec>,
    queue: FairQueue<usize>,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    outcomes: Vec<Outcome>,
    /// Running cost estimate per tenant (seat-µs per request), corrected by
    /// measurement as the server does.
    estimates: Vec<u64>,
    /// Waiting tickets: their tenant and when they arrived.
    waiting: HashMap<u64, (usize, u64)>,
    grants: HashMap<u64, Grant>,
    rng: StdRng,
}

impl Sim {
    fn run(setup: Setup, tenants: &[TenantSpec]) -> Vec<Outcome> {
        let mut sim = Sim {
            setup,
            tenants: tenants.to_vec(),
            queue: FairQueue::with_tenant_ceiling(
                setup.capacity,
                setup.tenant_max_seats,
                setup.discipline,
            ),
            events: BinaryHeap::new(),
            seq: 0,
            outcomes: vec![Outcome::default(); tenants.len()],
            estimates: vec![setup.default_estimate; tenants.len()],
            waiting: HashMap::new(),
            grants: HashMap::new(),
            rng: StdRng::seed_from_u64(7),
        };
        for (i, t) in tenants.iter().enumerate() {
            match t.load {
                Load::Backlogged(n) => (0..n).for_each(|_| sim.schedule(0, Event::Arrive(i))),
                Load::Rate(_) | Load::Phased(..) => {
                    let first = sim.gap(i, 0);
                    sim.schedule(first, Event::Arrive(i));
                }
            }
        }
        while let Some(Reverse((now, _, event))) = sim.events.pop() {
            if now > setup.duration {
                break;
            }
            match event {
                Event::Arrive(i) => sim.arrive(i, now),
                Event::Complete(i, ticket, start, service) => {
                    sim.complete(i, ticket, start, service, now)
                }
                Event::GiveUp(i, ticket) => {
                    if sim.queue.cancel(&i, ticket) {
                        sim.waiting.remove(&ticket);
                        if now >= setup.measure_from {
                            sim.outcomes[i].overloaded += 1;
                        }
                        sim.next_after_finish(i, now);
                    }
                }
            }
        }
        sim.outcomes
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, event)));
    }

    fn rate(&self, i: usize, now: u64) -> f64 {
        match self.tenants[i].load {
            Load::Rate(r) => r,
            Load::Phased(a, b) => {
                if now < self.setup.duration / 2 {
                    a
                } else {
                    b
                }
            }
            Load::Backlogged(_) => 0.0,
        }
    }

    fn gap(&mut self, i: usize, now: u64) -> u64 {
        let mean = SECOND as f64 / self.rate(i, now);
        (mean * self.rng.gen_range(0.5..1.5)) as u64
    }

    fn arrive(&mut self, i: usize, now: u64) {
        let spec = self.tenants[i];
        if !matches!(spec.load, Load::Backlogged(_)) {
            let next = now + self.gap(i, now);
            self.schedule(next, Event::Arrive(i));
        }
        if now >= self.setup.measure_from {
            self.outcomes[i].demand += u64::from(spec.width) * spec.service;
        }
        let ask = Ask {
            width: spec.width,
            cost: u64::from(spec.width) * self.estimates[i],
            weight: spec.weight,
            cap: spec.cap,
            max_queue: self.setup.max_queue,
        };
        match self.queue.arrive(&i, ask) {
            Arrival::Granted(grant) => self.start(i, grant, now),
            Arrival::Queued(ticket) => {
                self.waiting.insert(ticket, (i, now));
                self.schedule(now + self.setup.wait_budget, Event::GiveUp(i, ticket));
            }
            Arrival::Full => {
                if now >= self.setup.measure_from {
                    self.outcomes[i].full += 1;
                }
                self.next_after_finish(i, now + MS);
            }
        }
    }

    fn start(&mut self, i: usize, grant: Grant, now: u64) {
        let service = self.tenants[i].service;
        self.grants.insert(grant.ticket, grant);
        self.schedule(
            now + service,
            Event::Complete(i, grant.ticket, now, service),
        );
    }

    fn complete(&mut self, i: usize, ticket: u64, start: u64, service: u64, now: u64) {
        let grant = self.grants.remove(&ticket).expect("a started request");
        let from = start.max(self.setup.measure_from);
        if now > from {
            self.outcomes[i].seat_time += u64::from(grant.width) * (now - from);
        }
        self.queue.complete(grant, u64::from(grant.width) * service);
        // The server's estimator: an exponentially weighted mean, 1/4 new.
        self.estimates[i] = (3 * self.estimates[i] + service) / 4;
        for g in self.queue.dispatch() {
            let (tenant, since) = self.waiting.remove(&g.ticket).expect("a waiting ticket");
            if now >= self.setup.measure_from {
                let outcome = &mut self.outcomes[tenant];
                outcome.max_wait = outcome.max_wait.max(now - since);
            }
            self.start(tenant, g, now);
        }
        self.next_after_finish(i, now);
    }

    /// A backlogged tenant sends its next request as soon as one ends.
    fn next_after_finish(&mut self, i: usize, at: u64) {
        if matches!(self.tenants[i].load, Load::Backlogged(_)) {
            self.schedule(at, Event::Arrive(i));
        }
    }
}

/// Weighted max-min shares of `total` seat-time over `demands`: tenants
/// asking less than their weighted share get what they ask; the rest is
/// split among the others by weight.
fn fair_shares(total: f64, demands: &[f64], weights: &[u32]) -> Vec<f64> {
    let mut share = vec![0.0; demands.len()];
    let mut open: Vec<usize> = (0..demands.len()).collect();
    let mut left = total;
    loop {
        let weight: f64 = open.iter().map(|&i| f64::from(weights[i])).sum();
        let satisfied: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| demands[i] <= left * f64::from(weights[i]) / weight)
            .collect();
        if satisfied.is_empty() {
            for &i in &open {
                share[i] = left * f64::from(weights[i]) / weight;
            }
            return share;
        }
        for &i in &satisfied {
            share[i] = demands[i];
            left -= demands[i];
        }
        open.retain(|i| !satisfied.contains(i));
        if open.is_empty() {
            return share;
        }
    }
}

/// The largest relative difference between a tenant's seat-time and its fair share.
fn share_error(tenants: &[TenantSpec], outcomes: &[Outcome]) -> f64 {
    let total: f64 = outcomes.iter().map(|o| o.seat_time as f64).sum();
    let demands: Vec<f64> = tenants
        .iter()
        .zip(outcomes)
        .map(|(t, o)| match t.load {
            Load::Backlogged(_) => f64::INFINITY,
            _ => o.demand as f64,
        })
        .collect();
    let weights: Vec<u32> = tenants.iter().map(|t| t.weight).collect();
    let fair = fair_shares(total, &demands, &weights);
    outcomes
        .iter()
        .zip(&fair)
        .map(|(o, f)| (o.seat_time as f64 - f).abs() / f)
        .fold(0.0, f64::max)
}

fn setup(capacity: u32) -> Setup {
    Setup {
        capacity,
        tenant_max_seats: capacity,
        discipline: Discipline::Fair,
        max_queue: 64,
        wait_budget: 10 * SECOND,
        duration: 60 * SECOND,
        measure_from: 5 * SECOND,
        default_estimate: 10 * MS,
    }
}

#[test]
fn the_fair_share_helper_is_weighted_max_min() {
    let shares = fair_shares(100.0, &[10.0, f64::INFINITY, f64::INFINITY], &[1, 1, 3]);
    assert_eq!(shares, vec![10.0, 22.5, 67.5]);
    let all_small = fair_shares(100.0, &[10.0, 20.0], &[1, 1]);
    assert_eq!(all_small, vec![10.0, 20.0]);
}

#[test]
fn equal_tenants_share_within_one_percent() {
    let tenants = vec![tenant(1, 1, 10 * MS, Load::Backlogged(16)); 4];
    let outcomes = Sim::run(setup(8), &tenants);
    let error = share_error(&tenants, &outcomes);
    assert!(error <= 0.01, "share error {error:.4}: {outcomes:?}");
}

#[test]
fn weights_one_two_four_share_within_two_percent() {
    let tenants: Vec<TenantSpec> = [1, 2, 4]
        .into_iter()
        .map(|w| tenant(w, 1, 10 * MS, Load::Backlogged(16)))
        .collect();
    let outcomes = Sim::run(setup(8), &tenants);
    let error = share_error(&tenants, &outcomes);
    assert!(error <= 0.02, "share error {error:.4}: {outcomes:?}");
    // Not trivially equal: the heaviest got about four times the lightest.
    let ratio = outcomes[2].seat_time as f64 / outcomes[0].seat_time as f64;
    assert!((3.9..4.1).contains(&ratio), "{ratio}");
}

#[test]
fn mixed_widths_and_lengths_share_within_five_percent() {
    let tenants = vec![
        tenant(1, 1, 5 * MS, Load::Backlogged(16)),
        tenant(1, 4, 5 * MS, Load::Backlogged(16)),
        tenant(1, 1, 50 * MS, Load::Backlogged(16)),
        tenant(1, 4, 50 * MS, Load::Backlogged(16)),
    ];
    let outcomes = Sim::run(setup(8), &tenants);
    let error = share_error(&tenants, &outcomes);
    assert!(error <= 0.05, "share error {error:.4}: {outcomes:?}");
}

#[test]
fn a_tenant_that_under_used_gets_no_windup_credit() {
    // Capacity is 8 seats of 10 ms: 800 requests a second. `steady` is always
    // backlogged; `late` asks for a quarter of capacity, then for all of it
    // (twice its share).
    let tenants = vec![
        tenant(1, 1, 10 * MS, Load::Backlogged(16)),
        tenant(1, 1, 10 * MS, Load::Phased(200.0, 800.0)),
    ];
    let run = Setup {
        measure_from: 30 * SECOND,
        ..setup(8)
    };
    let outcomes = Sim::run(run, &tenants);
    let error = share_error(&tenants, &outcomes);
    assert!(
        error <= 0.10,
        "share error in the second half {error:.4}: {outcomes:?}"
    );
}

/// Eight victims asking 80 % of their share and one neighbor asking `times`
/// its share; each tenant's cap allows half the capacity (oversubscribed).
fn noisy_neighbor(times: f64, discipline: Discipline) -> Vec<Outcome> {
    let capacity = 9;
    let service = 20 * MS;
    let share_rate = SECOND as f64 / service as f64; // one seat's worth
    let mut tenants = vec![
        TenantSpec {
            cap: capacity / 2,
            ..tenant(1, 1, service, Load::Rate(0.8 * share_rate))
        };
        8
    ];
    tenants.push(TenantSpec {
        cap: capacity / 2,
        ..tenant(1, 1, service, Load::Rate(times * share_rate))
    });
    let run = Setup {
        discipline,
        wait_budget: 100 * MS,
        duration: 30 * SECOND,
        measure_from: 2 * SECOND,
        default_estimate: service,
        ..setup(capacity)
    };
    Sim::run(run, &tenants)
}

fn victims_protected(outcomes: &[Outcome], budget: u64) -> Result<(), String> {
    for (i, o) in outcomes[..8].iter().enumerate() {
        if o.full + o.overloaded > 0 || o.max_wait > budget {
            return Err(format!("victim {i}: {o:?}"));
        }
    }
    Ok(())
}

#[test]
fn victims_of_a_noisy_neighbor_are_not_rejected_and_wait_within_budget() {
    for times in [10.0, 20.0, 50.0] {
        let outcomes = noisy_neighbor(times, Discipline::Fair);
        victims_protected(&outcomes, 100 * MS)
            .unwrap_or_else(|e| panic!("neighbor at {times}x: {e}"));
        let neighbor = &outcomes[8];
        assert!(
            neighbor.full + neighbor.overloaded > 0,
            "the neighbor is pushed back: {neighbor:?}"
        );
    }
}

#[test]
fn the_same_noisy_neighbor_breaks_a_fifo_queue() {
    // The control: the test above can fail, and does when order is FIFO.
    for times in [10.0, 20.0, 50.0] {
        let outcomes = noisy_neighbor(times, Discipline::Fifo);
        assert!(
            victims_protected(&outcomes, 100 * MS).is_err(),
            "FIFO protected the victims at {times}x: {outcomes:?}"
        );
    }
}

/// A tenant whose requests never finish (a hung client or database) beside
/// three backlogged tenants of weights 1, 1 and 2, on 8 seats.
fn stuck_tenant(tenant_max_seats: u32) -> (Vec<TenantSpec>, Vec<Outcome>) {
    let never = 1_000 * 60 * SECOND;
    let tenants = vec![
        tenant(1, 1, never, Load::Backlogged(64)),
        tenant(1, 1, 10 * MS, Load::Backlogged(16)),
        tenant(1, 1, 10 * MS, Load::Backlogged(16)),
        tenant(2, 1, 10 * MS, Load::Backlogged(16)),
    ];
    let run = Setup {
        tenant_max_seats,
        ..setup(8)
    };
    let outcomes = Sim::run(run, &tenants);
    (tenants, outcomes)
}

#[test]
fn a_tenant_whose_requests_never_finish_holds_only_its_ceiling() {
    let (tenants, outcomes) = stuck_tenant(4);
    let span = (60 - 5) * SECOND;
    // The others are backlogged, so they fill every seat the stuck tenant
    // leaves: exactly the four above its ceiling (its own seat-time is
    // counted only when a request ends, which none does).
    let others: u64 = outcomes[1..].iter().map(|o| o.seat_time).sum();
    assert!(
        (0.99 * (4 * span) as f64..=(4 * span) as f64).contains(&(others as f64)),
        "{outcomes:?}"
    );
    assert!(outcomes[1..].iter().all(|o| o.full + o.overloaded == 0));
    let error = share_error(&tenants[1..], &outcomes[1..]);
    assert!(error <= 0.02, "share error {error:.4}: {outcomes:?}");
}

#[test]
fn without_a_ceiling_the_stuck_tenant_takes_every_seat() {
    // The control: the test above can fail, and does without the ceiling.
    let (_, outcomes) = stuck_tenant(8);
    let others: u64 = outcomes[1..].iter().map(|o| o.seat_time).sum();
    assert!(others < SECOND, "the others still ran: {outcomes:?}");
}
