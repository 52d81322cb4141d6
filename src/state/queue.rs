//! The circuit breaker (DESIGN.md §13), a part of the pick stage (§11): a cap on each backend's
//! requests in flight (`max_in_flight`), and one FIFO queue per pool for the requests that find
//! their backend full (`max_queue`, `queue_timeout`).
//!
//! Owns: the slot counts (one [`Lane`] per backend of a breaker pool), the waiters, the order in
//! which freed slots go to them, and the queue metrics. Must not touch: selection — the pick
//! stage says which backend a request wants and does the re-pick when its backend stops
//! serving; which backends a waiter may use is asked of its [`Seat`], which the snapshot layer
//! answers from the waiter's own pool and view — sockets, or the snapshot store.
//!
//! Contracts:
//! - **No lock without waiters.** While nobody waits, taking a slot is one compare-exchange on the
//!   backend's count and giving it back one subtraction. The queue's lock is taken only when a
//!   backend is full or requests wait (and off the request path, when a view changes).
//! - **FIFO, no barging.** A freed slot goes straight to the oldest waiter that can use it — a
//!   pinned waiter only its own backend's, an unpinned one any backend eligible for new
//!   requests — without the count ever going down in between. The invariant kept under the lock:
//!   no waiter could use a free slot. So a newcomer that finds a free slot under the lock may take
//!   it, and one that finds waiters for its backend queues behind them.
//! - **The one race**, a lock-free release against an arriving waiter: the waiter announces itself
//!   in `waiting` before it looks at the counts again under the lock; the releaser subtracts
//!   before it looks at `waiting`. Both sequentially consistent, so one of the two sees the other:
//!   either the waiter finds the free slot, or the releaser takes the lock and hands it over.
//! - **Given back by `Drop`.** A waiter's place is a [`Ticket`]: dropping it (the client went
//!   away, the request future was dropped, a panic) leaves the queue, and a slot granted to it
//!   that it never took is handed on. A held slot is released by the exchange's `Drop`
//!   (`path/exchange.rs`).
//! - **Across reloads.** [`Queues`] (in the backend registry) keeps one queue per pool name and
//!   one lane per (pool, backend id): requests of old and new snapshots share the counts, so the
//!   cap holds during a reload, and the waiters of a pool that keeps its breaker stay in line.
//!   The cap is the current configuration's (a raised one lets waiters in at once); the queue's
//!   size and timeout are those of each request's own snapshot. A waiter stays on the snapshot it started
//!   with (DESIGN.md §7); a backend that leaves the pool no longer takes anyone from the queue,
//!   and its pinned waiters re-pick.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::{IntCounter, IntGauge, IntGaugeVec};
use tokio::sync::oneshot;

use crate::config::BreakerOpts;
use crate::state::metrics::Metrics;

/// A waiter's pool, as the waiter's own snapshot sees it: what the queue needs to know of it,
/// answered by selection (the snapshot layer), so the queue never reads a view or a backend
/// state itself. Held by a waiting request's queue entry and ticket.
pub trait Seat: Send + Sync {
    /// The circuit breaker of the waiter's pool.
    fn breaker(&self) -> &Breaker;
    /// Backend `i` may take a request without affinity (the round-robin set), now.
    fn usable_any(&self, i: u32) -> bool;
    /// Backend `i` still serves the sessions pinned to it, now.
    fn serving(&self, i: u32) -> bool;
}

/// Why the breaker refused a request (the `reason` of `tether_queue_rejections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue was full (or there is none: `max_queue = 0`).
    Full = 0,
    /// The request waited past `queue_timeout`.
    Timeout = 1,
}

pub const REFUSALS: [&str; 2] = ["full", "timeout"];

impl Refused {
    pub fn as_str(self) -> &'static str {
        REFUSALS[self as usize]
    }
}

/// The queues of every pool with a circuit breaker, by pool name: live state that outlives
/// snapshots, kept in the backend registry.
#[derive(Default)]
pub struct Queues {
    map: Mutex<HashMap<Arc<str>, Arc<Queue>>>,
}

impl Queues {
    pub fn new() -> Queues {
        Queues::default()
    }

    /// The queue of `pool`, created (with its metric series) if new.
    pub fn get_or_create(&self, m: &Metrics, pool: &str, opts: &BreakerOpts) -> Arc<Queue> {
        let mut map = lock(&self.map);
        if let Some(q) = map.get(pool) {
            return q.clone();
        }
        let q = Arc::new(Queue::new(m, pool, opts.max_in_flight));
        map.insert(q.pool.clone(), q.clone());
        q
    }

    /// After a snapshot was installed, with the breakers of its pools: each queue it uses learns its pool's backends (a backend that
    /// left stops taking waiters, and its pinned waiters re-pick; a raised cap or a new backend
    /// lets waiters in — the cap is always the current configuration's, for the requests of
    /// older snapshots too); queues of pools that no longer have a breaker are dropped, with their
    /// metric series. Their remaining waiters stay on their own snapshot and are served as its
    /// requests finish, or time out. Off the request path.
    pub fn installed<'a>(&self, breakers: impl Iterator<Item = &'a Breaker>) {
        let mut map = lock(&self.map);
        let mut kept = Vec::new();
        for b in breakers {
            b.queue.cap.store(b.opts.max_in_flight, SeqCst);
            b.queue.members(&b.lanes);
            kept.push(b.queue.clone());
        }
        map.retain(|_, q| {
            let keep = kept.iter().any(|k| Arc::ptr_eq(k, q));
            if !keep {
                q.forget_series();
            }
            keep
        });
        drop(map);
        for q in kept {
            q.view_changed();
        }
    }
}

/// One backend's slots: how many of its requests are in flight under the breaker.
pub struct Lane {
    id: Arc<str>,
    busy: AtomicU32,
    /// Still in its pool (false once a reload removed the backend).
    member: AtomicBool,
    /// `tether_backend_queued`: waiters pinned to this backend.
    queued: IntGauge,
}

impl Lane {
    /// Takes a slot if fewer than `cap` are in use: one compare-exchange when one is free.
    fn take(&self, cap: u32) -> bool {
        let mut cur = self.busy.load(SeqCst);
        while cur < cap {
            match self
                .busy
                .compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Requests in flight on this backend under the breaker.
    pub fn in_use(&self) -> u32 {
        self.busy.load(SeqCst)
    }
}

/// One pool's queue of waiters.
pub struct Queue {
    pool: Arc<str>,
    /// `max_in_flight` of the current configuration (for every request, whatever its snapshot).
    cap: AtomicU32,
    /// Waiters in `inner.entries`; read without the lock to keep the hot path lock-free.
    waiting: AtomicUsize,
    inner: Mutex<Inner>,
    length: IntGauge,
    rejected: [IntCounter; 2],
    queued_vec: IntGaugeVec,
    length_vec: IntGaugeVec,
    rejected_vec: prometheus::IntCounterVec,
}

#[derive(Default)]
struct Inner {
    /// In arrival order (by `seq`).
    entries: VecDeque<Entry>,
    next_seq: u64,
    /// The pool's current backends by id.
    lanes: HashMap<Arc<str>, Arc<Lane>>,
}

/// What a waiter waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// A slot on this backend (an index of the waiter's pool): a pinned session.
    Pinned(u32),
    /// A slot on any backend eligible for new requests, except those in `tried`, looked at
    /// from `first` on.
    Any { first: u32, tried: Vec<u32> },
}

struct Entry {
    seq: u64,
    want: Want,
    /// The lane a pinned waiter counts in (`tether_backend_queued`).
    pinned: Option<Arc<Lane>>,
    /// The waiter's pool in its own snapshot: a slot is for a backend of *its* pool.
    seat: Arc<dyn Seat>,
    tx: oneshot::Sender<Verdict>,
}

/// What a waiter learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It holds a slot on this backend (an index of its pool) now.
    Granted(u32),
    /// Its backend stopped serving (or left the pool): pick again.
    Repick,
    /// `queue_timeout` is over.
    TimedOut,
}

/// The result of joining the queue.
pub enum Enqueued {
    /// A slot was free after all: the request holds it on this backend.
    Slot(u32),
    /// The queue is full: refuse.
    Full,
    /// Wait with this ticket.
    Wait(Ticket),
}

impl Queue {
    fn new(m: &Metrics, pool: &str, cap: u32) -> Queue {
        Queue {
            pool: pool.into(),
            cap: AtomicU32::new(cap),
            waiting: AtomicUsize::new(0),
            inner: Mutex::new(Inner::default()),
            length: m.queue_length.with_label_values(&[pool]),
            rejected: REFUSALS.map(|r| m.queue_rejections.with_label_values(&[pool, r])),
            queued_vec: m.backend_queued.clone(),
            length_vec: m.queue_length.clone(),
            rejected_vec: m.queue_rejections.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// The lane of backend `id`, created if new.
    fn lane(&self, id: &Arc<str>) -> Arc<Lane> {
        let mut g = self.lock();
        g.lanes
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(Lane {
                    id: id.clone(),
                    busy: AtomicU32::new(0),
                    member: AtomicBool::new(true),
                    queued: self.queued_vec.with_label_values(&[&self.pool, id]),
                })
            })
            .clone()
    }

    /// The pool's backends are now `lanes`: the others leave (their series too).
    fn members(&self, lanes: &[Arc<Lane>]) {
        let mut g = self.lock();
        g.lanes.retain(|_, l| {
            let keep = lanes.iter().any(|k| Arc::ptr_eq(k, l));
            if !keep {
                l.member.store(false, SeqCst);
                let _ = self.queued_vec.remove_label_values(&[&self.pool, &l.id]);
            }
            keep
        });
    }

    fn forget_series(&self) {
        let g = self.lock();
        for l in g.lanes.values() {
            let _ = self.queued_vec.remove_label_values(&[&self.pool, &l.id]);
        }
        let _ = self.length_vec.remove_label_values(&[&self.pool]);
        for r in REFUSALS {
            let _ = self.rejected_vec.remove_label_values(&[&self.pool, r]);
        }
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.waiting.load(SeqCst)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives back a slot of `lane` (`hint`: its index in the releaser's pool, which is usually
    /// the waiters' pool too).
    fn release(&self, lane: &Arc<Lane>, hint: u32) {
        if self.waiting.load(SeqCst) == 0 {
            lane.busy.fetch_sub(1, SeqCst);
            if self.waiting.load(SeqCst) == 0 {
                return;
            }
            // A waiter arrived meanwhile and may have missed the slot just freed.
            let mut g = self.lock();
            self.poke(&mut g);
            return;
        }
        let mut g = self.lock();
        if !self.hand_over(&mut g, lane, hint) {
            lane.busy.fetch_sub(1, SeqCst);
        }
    }

    /// Hands a slot of `lane` to the oldest waiter that can use it; false when none can.
    fn hand_over(&self, g: &mut Inner, lane: &Arc<Lane>, hint: u32) -> bool {
        if !lane.member.load(SeqCst) {
            return false;
        }
        let mut k = 0;
        while k < g.entries.len() {
            match g.entries[k].can_use(lane, hint) {
                Some(i) => {
                    let e = g.entries.remove(k).expect("index in range");
                    if self.deliver(e, Verdict::Granted(i)) {
                        return true;
                    }
                    // Its receiver is gone: the slot is still ours to give.
                }
                None => k += 1,
            }
        }
        false
    }

    /// Grants free slots to waiters, oldest first (after a view change, a reload, or the race
    /// described in the module doc).
    fn poke(&self, g: &mut Inner) {
        let mut k = 0;
        while k < g.entries.len() {
            let e = &g.entries[k];
            let b = e.seat.breaker();
            match b.find_free(&*e.seat, &e.want) {
                Some(i) => {
                    let lane = b.lanes[i as usize].clone();
                    let e = g.entries.remove(k).expect("index in range");
                    if !self.deliver(e, Verdict::Granted(i)) {
                        lane.busy.fetch_sub(1, SeqCst);
                    }
                }
                None => k += 1,
            }
        }
    }

    /// Re-examines the waiters after the pool's view changed: pinned waiters whose backend no
    /// longer serves are told to re-pick, and free slots are granted (a backend came back).
    /// Off the request path (called by whoever rebuilt the view).
    pub fn view_changed(&self) {
        if self.waiting.load(SeqCst) == 0 {
            return;
        }
        let mut g = self.lock();
        let mut k = 0;
        while k < g.entries.len() {
            let e = &g.entries[k];
            let stale = match e.want {
                Want::Pinned(i) => !e.seat.serving(i),
                Want::Any { .. } => false,
            };
            if stale {
                let e = g.entries.remove(k).expect("index in range");
                self.deliver(e, Verdict::Repick);
            } else {
                k += 1;
            }
        }
        self.poke(&mut g);
    }

    /// Takes an entry out of the queue (its gauges with it) and tells its waiter `v`; false when
    /// the waiter is gone.
    fn deliver(&self, e: Entry, v: Verdict) -> bool {
        self.forget(&e);
        e.tx.send(v).is_ok()
    }

    fn forget(&self, e: &Entry) {
        self.waiting.fetch_sub(1, SeqCst);
        self.length.dec();
        if let Some(l) = &e.pinned {
            l.queued.dec();
        }
    }

    /// Removes the entry `seq` if it is still queued.
    fn remove(&self, g: &mut Inner, seq: u64) -> bool {
        match g.entries.binary_search_by_key(&seq, |e| e.seq) {
            Ok(k) => {
                let e = g.entries.remove(k).expect("index in range");
                self.forget(&e);
                true
            }
            Err(_) => false,
        }
    }
}

impl Entry {
    /// The index of `lane` in this waiter's pool, if the waiter can use a slot of it.
    fn can_use(&self, lane: &Arc<Lane>, hint: u32) -> Option<u32> {
        let b = self.seat.breaker();
        let i = match b.lanes.get(hint as usize) {
            Some(l) if Arc::ptr_eq(l, lane) => hint,
            _ => b.lanes.iter().position(|l| Arc::ptr_eq(l, lane))? as u32,
        };
        // A slot handed over keeps the count: above a cap lowered by a reload, it is not handed
        // over but freed.
        if lane.busy.load(SeqCst) > b.queue.cap.load(SeqCst) {
            return None;
        }
        match &self.want {
            Want::Pinned(p) => (*p == i).then_some(i),
            Want::Any { tried, .. } => {
                (!tried.contains(&i) && self.seat.usable_any(i)).then_some(i)
            }
        }
    }
}

/// The circuit breaker of one pool in one snapshot: its limits and its backends' lanes (indexed
/// like the pool's backends).
pub struct Breaker {
    pub opts: BreakerOpts,
    queue: Arc<Queue>,
    lanes: Box<[Arc<Lane>]>,
}

impl Breaker {
    /// The breaker of a pool with these backend ids, on the pool's live `queue`.
    pub fn new<'a>(
        queue: Arc<Queue>,
        ids: impl Iterator<Item = &'a Arc<str>>,
        opts: BreakerOpts,
    ) -> Breaker {
        let lanes = ids.map(|id| queue.lane(id)).collect();
        Breaker { opts, queue, lanes }
    }

    /// A slot on backend `i` if one is free and nobody waits: the lock-free hot path.
    pub fn try_take(&self, i: u32) -> bool {
        self.queue.waiting.load(SeqCst) == 0
            && self.lanes[i as usize].take(self.queue.cap.load(SeqCst))
    }

    /// Gives back a slot on backend `i`: handed to the oldest waiter that can use it, if any.
    pub fn release(&self, i: u32) {
        self.queue.release(&self.lanes[i as usize], i);
    }

    /// Joins the queue of the request that wants `want` in the pool `seat` (whose breaker this
    /// is); `seq`: its place from an earlier turn (a re-pick keeps its place, and is never
    /// refused as full). Under the lock, a slot that is free for this request is taken at once.
    pub fn enqueue(&self, seat: &Arc<dyn Seat>, want: Want, seq: Option<u64>) -> Enqueued {
        let q = &self.queue;
        let mut g = q.lock();
        q.waiting.fetch_add(1, SeqCst);
        if let Some(i) = self.find_free(&**seat, &want) {
            q.waiting.fetch_sub(1, SeqCst);
            return Enqueued::Slot(i);
        }
        if seq.is_none() && g.entries.len() >= self.opts.max_queue {
            q.waiting.fetch_sub(1, SeqCst);
            return Enqueued::Full;
        }
        let seq = seq.unwrap_or_else(|| {
            g.next_seq += 1;
            g.next_seq
        });
        let pinned = match want {
            Want::Pinned(i) => Some(self.lanes[i as usize].clone()),
            Want::Any { .. } => None,
        };
        if let Some(l) = &pinned {
            l.queued.inc();
        }
        q.length.inc();
        let (tx, rx) = oneshot::channel();
        let at = g.entries.partition_point(|e| e.seq < seq);
        g.entries.insert(
            at,
            Entry {
                seq,
                want,
                pinned,
                seat: seat.clone(),
                tx,
            },
        );
        Enqueued::Wait(Ticket {
            queue: q.clone(),
            seq,
            rx,
            seat: seat.clone(),
            done: false,
        })
    }

    /// A free slot for `want` in `seat`'s pool (this breaker's pool), taken.
    fn find_free(&self, seat: &dyn Seat, want: &Want) -> Option<u32> {
        let cap = self.queue.cap.load(SeqCst);
        match want {
            Want::Pinned(i) => self.lanes[*i as usize].take(cap).then_some(*i),
            Want::Any { first, tried } => {
                let n = self.lanes.len() as u32;
                (0..n).map(|k| (first + k) % n).find(|&i| {
                    !tried.contains(&i) && seat.usable_any(i) && self.lanes[i as usize].take(cap)
                })
            }
        }
    }

    /// Counts a refusal.
    pub fn refused(&self, r: Refused) {
        self.queue.rejected[r as usize].inc();
    }

    /// Requests in flight on backend `i` under the breaker.
    pub fn in_use(&self, i: u32) -> u32 {
        self.lanes[i as usize].in_use()
    }

    /// Requests waiting for a slot on backend `i` (sessions pinned to it).
    pub fn queued(&self, i: u32) -> i64 {
        self.lanes[i as usize].queued.get()
    }

    /// Requests refused so far because the queue was full, and because they waited too long.
    pub fn rejections(&self) -> (u64, u64) {
        (
            self.queue.rejected[Refused::Full as usize].get(),
            self.queue.rejected[Refused::Timeout as usize].get(),
        )
    }

    /// Backend `i` is still in its pool (a reload may have removed it since this snapshot).
    pub fn is_member(&self, i: u32) -> bool {
        self.lanes[i as usize].member.load(SeqCst)
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// See [`Queue::view_changed`].
    pub fn view_changed(&self) {
        self.queue.view_changed();
    }
}

/// A waiter's place in the queue. Dropping it leaves the queue; a slot granted to it that it
/// did not take (see [`Ticket::wait`]) is handed on.
pub struct Ticket {
    queue: Arc<Queue>,
    seq: u64,
    rx: oneshot::Receiver<Verdict>,
    seat: Arc<dyn Seat>,
    /// The verdict was taken by the waiter (a granted slot is its own now).
    done: bool,
}

impl Ticket {
    /// Its place in line (kept across a re-pick).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits, without holding a thread, for a slot, a re-pick or `deadline`. Cancel-safe: if the
    /// future is dropped, the ticket still owns whatever was granted and gives it back on drop.
    pub async fn wait(&mut self, deadline: tokio::time::Instant) -> Verdict {
        match tokio::time::timeout_at(deadline, &mut self.rx).await {
            Ok(Ok(v)) => {
                self.done = true;
                v
            }
            // The entry was dropped without a verdict (cannot happen while the ticket holds
            // the queue): treat as a re-pick, which re-joins.
            Ok(Err(_)) => {
                self.done = true;
                Verdict::Repick
            }
            Err(_) => {
                let removed = {
                    let mut g = self.queue.lock();
                    self.queue.remove(&mut g, self.seq)
                };
                self.done = true;
                if removed {
                    return Verdict::TimedOut;
                }
                // A verdict came in just as time ran out: a slot is taken, a re-pick is late.
                match self.rx.try_recv() {
                    Ok(Verdict::Granted(i)) => Verdict::Granted(i),
                    _ => Verdict::TimedOut,
                }
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let removed = {
            let mut g = self.queue.lock();
            self.queue.remove(&mut g, self.seq)
        };
        if removed {
            return;
        }
        if let Ok(Verdict::Granted(i)) = self.rx.try_recv() {
            self.seat.breaker().release(i);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{PoolSeat, Snapshot};
    use crate::state::backend::Registry;
    use std::time::Duration;

    fn snapshot(policy: &str, backends: usize, breaker: &str) -> Arc<Snapshot> {
        let mut text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n[affinity]\nsecret = \"queue-test-secret-0123456789abcdef\"\n\
             [[route]]\npool = \"p\"\n[pool.p]\npolicy = \"{policy}\"\n[pool.p.circuit_breaker]\n{breaker}\n"
        );
        for i in 0..backends {
            text.push_str(&format!(
                "[[pool.p.backend]]\nid = \"b{i}\"\naddr = \"127.0.0.1:{}\"\n",
                1000 + i
            ));
        }
        let config = crate::config::parse(&text, None).expect("valid test config");
        let registry = Registry::new(Arc::new(Metrics::new()));
        Arc::new(Snapshot::build(Arc::new(config), &registry, 1, None))
    }

    fn seat(s: &Arc<Snapshot>) -> Arc<dyn Seat> {
        PoolSeat::of(s.clone(), 0).expect("a breaker pool")
    }

    fn breaker(s: &Snapshot) -> &Breaker {
        s.pools[0].breaker.as_ref().expect("a breaker")
    }

    fn any(first: u32) -> Want {
        Want::Any {
            first,
            tried: Vec::new(),
        }
    }

    fn wait(b: &Breaker, s: &Arc<Snapshot>, want: Want) -> Ticket {
        match b.enqueue(&seat(s), want, None) {
            Enqueued::Wait(t) => t,
            Enqueued::Slot(i) => panic!("expected to wait, got a slot on {i}"),
            Enqueued::Full => panic!("expected to wait, the queue is full"),
        }
    }

    /// The verdict a ticket has right now (without waiting for time to pass).
    async fn now(t: &mut Ticket) -> Option<Verdict> {
        tokio::time::timeout(Duration::from_millis(20), t.wait(far()))
            .await
            .ok()
    }

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn the_cap_holds_and_freed_slots_go_to_the_oldest_waiter() {
        let s = snapshot("round_robin", 1, "max_in_flight = 2");
        let b = breaker(&s);
        assert!(b.try_take(0) && b.try_take(0));
        assert!(!b.try_take(0), "the third request finds the backend full");
        let mut waiters: Vec<Ticket> = (0..3).map(|_| wait(b, &s, any(0))).collect();
        assert_eq!(b.queue().len(), 3);
        assert_eq!(s.pools[0].metrics.duration.get_sample_count(), 0);
        for (n, t) in waiters.iter_mut().enumerate() {
            b.release(0);
            assert_eq!(
                now(t).await,
                Some(Verdict::Granted(0)),
                "waiter {n} is next"
            );
            assert_eq!(b.in_use(0), 2, "a handed-over slot never frees in between");
        }
        assert!(b.queue().is_empty());
        b.release(0);
        b.release(0);
        assert_eq!(b.in_use(0), 0);
        drop(waiters);
        assert_eq!(b.in_use(0), 0, "taken verdicts are not given back twice");
    }

    #[tokio::test]
    async fn a_newcomer_queues_behind_waiters_for_its_backend() {
        let s = snapshot("round_robin", 2, "max_in_flight = 1");
        let b = breaker(&s);
        assert!(b.try_take(0) && b.try_take(1));
        let mut first = wait(b, &s, Want::Pinned(0));
        assert!(!b.try_take(1), "no lock-free take while someone waits");
        b.release(1);
        // Nobody waits for backend 1: a newcomer (pinned there) takes its free slot at once.
        assert!(matches!(
            b.enqueue(&seat(&s), Want::Pinned(1), None),
            Enqueued::Slot(1)
        ));
        let mut second = wait(b, &s, Want::Pinned(0));
        b.release(0);
        assert_eq!(now(&mut first).await, Some(Verdict::Granted(0)));
        assert_eq!(now(&mut second).await, None, "still waiting");
        b.release(0);
        assert_eq!(now(&mut second).await, Some(Verdict::Granted(0)));
    }

    #[tokio::test]
    async fn an_unpinned_request_takes_whichever_backend_frees_first() {
        let s = snapshot("round_robin", 3, "max_in_flight = 1");
        let b = breaker(&s);
        assert!(b.try_take(0) && b.try_take(1));
        assert!(matches!(
            b.enqueue(&seat(&s), any(0), None),
            Enqueued::Slot(2)
        ));
        let mut pinned = wait(b, &s, Want::Pinned(0));
        let mut unpinned = wait(b, &s, any(0));
        b.release(1);
        assert_eq!(now(&mut unpinned).await, Some(Verdict::Granted(1)));
        assert_eq!(
            now(&mut pinned).await,
            None,
            "a pinned waiter only takes its own"
        );
        assert_eq!(s.pools[0].backends.len(), 3);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_max_queue_zero_is_no_queue() {
        let s = snapshot("round_robin", 1, "max_in_flight = 1\nmax_queue = 1");
        let b = breaker(&s);
        assert!(b.try_take(0));
        let _t = wait(b, &s, any(0));
        assert!(matches!(b.enqueue(&seat(&s), any(0), None), Enqueued::Full));
        assert_eq!(b.queue().len(), 1, "the refused one did not stay");
        let s = snapshot("round_robin", 1, "max_in_flight = 1\nmax_queue = 0");
        let b = breaker(&s);
        assert!(b.try_take(0));
        assert!(matches!(b.enqueue(&seat(&s), any(0), None), Enqueued::Full));
        b.release(0);
        assert!(matches!(
            b.enqueue(&seat(&s), any(0), None),
            Enqueued::Slot(0)
        ));
    }

    #[tokio::test]
    async fn a_waiter_times_out_and_leaves() {
        let s = snapshot("round_robin", 1, "max_in_flight = 1");
        let b = breaker(&s);
        assert!(b.try_take(0));
        let mut t = wait(b, &s, any(0));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(30);
        assert_eq!(t.wait(deadline).await, Verdict::TimedOut);
        assert!(b.queue().is_empty());
        b.release(0);
        assert_eq!(b.in_use(0), 0, "nobody took the slot");
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_and_hands_on_what_it_was_granted() {
        let s = snapshot("round_robin", 1, "max_in_flight = 1");
        let b = breaker(&s);
        assert!(b.try_take(0));
        let gone = wait(b, &s, any(0));
        let granted_then_gone = wait(b, &s, any(0));
        let mut last = wait(b, &s, any(0));
        drop(gone);
        assert_eq!(b.queue().len(), 2);
        b.release(0); // granted to the second, which goes away before taking it
        drop(granted_then_gone);
        assert_eq!(now(&mut last).await, Some(Verdict::Granted(0)));
        assert_eq!(b.in_use(0), 1);
        // A wait future dropped mid-way: the ticket still leaves on drop.
        let mut t = wait(b, &s, any(0));
        let _ = tokio::time::timeout(Duration::from_millis(5), t.wait(far())).await;
        drop(t);
        assert!(b.queue().is_empty());
        b.release(0);
        assert_eq!(b.in_use(0), 0);
    }

    #[tokio::test]
    async fn a_pinned_waiter_repicks_when_its_backend_stops_serving() {
        let s = snapshot("cookie", 2, "max_in_flight = 1");
        let b = breaker(&s);
        assert!(b.try_take(0) && b.try_take(1));
        let mut on0 = wait(b, &s, Want::Pinned(0));
        let mut on1 = wait(b, &s, Want::Pinned(1));
        assert_eq!(s.pools[0].backends[0].state.metrics.in_flight.get(), 0);
        let st = &s.pools[0].backends[0].state;
        while st.is_healthy() {
            st.record(false, 1, 1);
        }
        s.pools[0].refresh();
        assert_eq!(now(&mut on0).await, Some(Verdict::Repick));
        assert_eq!(
            now(&mut on1).await,
            None,
            "the other backend's waiter stays"
        );
        // Re-joining keeps the place: ahead of a newer waiter for the same backend.
        let place = on0.seq();
        drop(on0);
        let mut newer = wait(b, &s, Want::Pinned(1));
        let mut again = match b.enqueue(&seat(&s), Want::Pinned(1), Some(place)) {
            Enqueued::Wait(t) => t,
            _ => panic!("waits"),
        };
        eprintln!(
            "seqs: again {} on1 {} newer {}",
            again.seq(),
            on1.seq(),
            newer.seq()
        );
        b.release(1);
        assert_eq!(now(&mut again).await, Some(Verdict::Granted(1)));
        assert_eq!(now(&mut on1).await, None);
        b.release(1);
        assert_eq!(now(&mut on1).await, Some(Verdict::Granted(1)));
        assert_eq!(now(&mut newer).await, None);
    }

    #[tokio::test]
    async fn a_reload_keeps_the_queue_and_counts_and_drops_what_left() {
        let conf = |pools: &str| {
            crate::config::parse(
                &format!("[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n[[route]]\npool = \"p\"\n{pools}"),
                None,
            )
            .unwrap()
        };
        let p = |cap: u32, ids: &[&str]| {
            let mut t = format!("[pool.p]\npolicy = \"round_robin\"\n[pool.p.circuit_breaker]\nmax_in_flight = {cap}\n");
            for (n, id) in ids.iter().enumerate() {
                t.push_str(&format!(
                    "[[pool.p.backend]]\nid = \"{id}\"\naddr = \"127.0.0.1:{}\"\n",
                    10 + n
                ));
            }
            t
        };
        let q = "[[route]]\npath_prefix = \"/q\"\npool = \"q\"\n[pool.q]\npolicy = \"round_robin\"\n\
                 [pool.q.circuit_breaker]\nmax_in_flight = 1\n[[pool.q.backend]]\nid = \"x\"\naddr = \"127.0.0.1:20\"\n";
        let metrics = Arc::new(Metrics::new());
        let store = crate::snapshot::Store::new(
            conf(&format!("{}{q}", p(1, &["a", "b"]))),
            Arc::new(Registry::new(metrics.clone())),
        );
        let old = store.load();
        let b = breaker(&old);
        assert!(b.try_take(0) && b.try_take(1));
        let mut waiter = wait(b, &old, Want::Pinned(0));
        let mut on_b = wait(b, &old, Want::Pinned(1));
        old.pool("q")
            .unwrap()
            .breaker
            .as_ref()
            .unwrap()
            .refused(Refused::Full);
        // The new generation: p keeps a (cap 2) and loses b; q is gone.
        let (new, _) = store.install(conf(&p(2, &["a"])));
        assert_eq!(
            now(&mut waiter).await,
            Some(Verdict::Granted(0)),
            "the raised cap lets it in"
        );
        assert_eq!(
            now(&mut on_b).await,
            Some(Verdict::Repick),
            "b left the pool"
        );
        let nb = breaker(&new);
        assert_eq!(
            nb.in_use(0),
            2,
            "the count is shared with the old snapshot's requests"
        );
        assert!(!nb.try_take(0));
        b.release(1); // b's last request ends: nobody takes a removed backend's slot
        assert_eq!(b.in_use(1), 0);
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(!text.contains("pool=\"q\""), "q's series are gone:\n{text}");
        assert!(
            !text.contains("backend=\"b\",pool=\"p\""),
            "b's queue series is gone:\n{text}"
        );
        assert!(text.contains("tether_queue_length{pool=\"p\"} 0"), "{text}");
    }

    #[tokio::test]
    async fn metrics_count_waiters_per_pool_and_per_pinned_backend() {
        let metrics = Arc::new(Metrics::new());
        let text = "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"off\"\n[[route]]\npool = \"p\"\n\
                    [pool.p]\npolicy = \"round_robin\"\n[pool.p.circuit_breaker]\nmax_in_flight = 1\n\
                    [[pool.p.backend]]\nid = \"a\"\naddr = \"127.0.0.1:1\"\n";
        let config = crate::config::parse(text, None).unwrap();
        let registry = Registry::new(metrics.clone());
        let s = Arc::new(Snapshot::build(Arc::new(config), &registry, 1, None));
        let b = breaker(&s);
        assert!(b.try_take(0));
        let _pinned = wait(b, &s, Want::Pinned(0));
        let _any = wait(b, &s, any(0));
        assert_eq!(metrics.queue_length.with_label_values(&["p"]).get(), 2);
        assert_eq!(
            metrics.backend_queued.with_label_values(&["p", "a"]).get(),
            1
        );
        drop(_pinned);
        assert_eq!(
            metrics.backend_queued.with_label_values(&["p", "a"]).get(),
            0
        );
        b.refused(Refused::Timeout);
        assert_eq!(
            metrics
                .queue_rejections
                .with_label_values(&["p", "timeout"])
                .get(),
            1
        );
    }
}
