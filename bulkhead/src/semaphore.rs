//! The permit logic every limiter of this crate shares: a counting semaphore
//! whose limit changes at run time, with a bounded FIFO or LIFO wait queue.
//!
//! # The word
//!
//! One `AtomicU64` holds the permits in flight (low 32 bits) and the waiters
//! queued (high 32 bits); the limit is a separate `AtomicU32`. While nobody
//! waits, acquiring is one compare-and-swap that checks `in_flight < limit`
//! and adds one, and releasing is one compare-and-swap that subtracts one:
//! no lock on the path of a bulkhead without a queue.
//!
//! # The queue
//!
//! Waiters live in a `VecDeque` behind a mutex. The invariant: **outside the
//! lock, never both a waiter queued and a free permit** (`waiters > 0` implies
//! `in_flight >= limit`). Everything that could break it runs under the lock
//! and *drains* the queue before unlocking, handing permits to waiters (the
//! front for FIFO, the back for LIFO) while `in_flight < limit`:
//!
//! - a release that sees waiters takes the lock, gives its permit back and
//!   drains (so the permit passes straight to the next waiter);
//! - changing the limit happens under the lock and drains;
//! - enqueueing checks for a free permit and pushes under the lock.
//!
//! Lock-free acquires succeed only while `waiters == 0`, so newcomers never
//! overtake the queue, and lock-free releases only while `waiters == 0`, so a
//! waiter is never left behind a free permit. Lowering the limit revokes
//! nothing: held permits stay valid, and new ones are handed out only once
//! `in_flight` is below the new limit.
//!
//! The lock-free paths only ever meet the locked ones on the word itself
//! (a compare-and-swap there fails if a waiter was queued meanwhile), so the
//! protocol needs no ordering between the word and the limit beyond the
//! lock's. It is model-checked with loom (`tests/loom.rs`) and checked
//! against a reference model with proptest.
#![cfg_attr(not(watertight_loom), allow(unreachable_pub))]

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::sync::{AtomicU32, AtomicU64, AtomicU8, Mutex, Ordering::SeqCst};

const WAITER: u64 = 1 << 32;

fn in_flight_of(word: u64) -> u32 {
    word as u32
}

fn waiters_of(word: u64) -> u32 {
    (word >> 32) as u32
}

const WAITING: u8 = 0;
const GRANTED: u8 = 1;
const REMOVED: u8 = 2;

/// Wakers collected under the lock and woken after it is released.
struct WakeList {
    wakers: [Option<Waker>; 8],
    len: usize,
}

impl WakeList {
    fn new() -> Self {
        WakeList {
            wakers: Default::default(),
            len: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.len == self.wakers.len()
    }

    fn push(&mut self, waker: Waker) {
        self.wakers[self.len] = Some(waker);
        self.len += 1;
    }

    fn wake_all(&mut self) {
        for w in self.wakers[..self.len].iter_mut() {
            if let Some(w) = w.take() {
                w.wake();
            }
        }
        self.len = 0;
    }
}

/// A counting semaphore with a run-time limit and a wait queue. See the
/// [module docs](self).
pub struct Semaphore {
    state: AtomicU64,
    limit: AtomicU32,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
    lifo: bool,
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .field("lifo", &self.lifo)
            .finish()
    }
}

/// What [`Semaphore::enqueue`] did.
#[derive(Debug)]
pub enum Enqueued {
    /// A permit was free after all; `in_flight` after taking it.
    Acquired(u32),
    /// Queued: poll the waiter until it is granted, or cancel it.
    Queued(Arc<Waiter>),
    /// The queue holds `max_queue` waiters already.
    Full,
}

/// One queued acquirer.
pub struct Waiter {
    status: AtomicU8,
    /// `in_flight` right after the permit was handed over.
    in_flight: AtomicU32,
    waker: Mutex<Option<Waker>>,
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status.load(SeqCst) {
            WAITING => "waiting",
            GRANTED => "granted",
            _ => "removed",
        };
        f.debug_struct("Waiter").field("status", &status).finish()
    }
}

impl Waiter {
    fn new() -> Self {
        Waiter {
            status: AtomicU8::new(WAITING),
            in_flight: AtomicU32::new(0),
            waker: Mutex::new(None),
        }
    }

    /// `Ready(in_flight)` once a permit was handed to this waiter; until then
    /// registers the task to be woken when it is.
    pub fn poll_granted(&self, cx: &mut Context<'_>) -> Poll<u32> {
        if let Some(n) = self.granted() {
            return Poll::Ready(n);
        }
        {
            let mut slot = self.waker.lock();
            match &*slot {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *slot = Some(cx.waker().clone()),
            }
        }
        // The granter sets the status before it takes the waker: either it
        // saw the waker stored above, or this sees its grant.
        match self.granted() {
            Some(n) => Poll::Ready(n),
            None => Poll::Pending,
        }
    }

    /// `Some(in_flight)` once a permit was handed to this waiter.
    pub fn granted(&self) -> Option<u32> {
        (self.status.load(SeqCst) == GRANTED).then(|| self.in_flight.load(SeqCst))
    }
}

impl Semaphore {
    /// A semaphore of `limit` permits whose queue serves the newest waiter
    /// first when `lifo`, else the oldest.
    pub fn new(limit: u32, lifo: bool) -> Self {
        Semaphore {
            state: AtomicU64::new(0),
            limit: AtomicU32::new(limit),
            queue: Mutex::new(VecDeque::new()),
            lifo,
        }
    }

    /// The current limit.
    pub fn limit(&self) -> u32 {
        self.limit.load(SeqCst)
    }

    /// Permits held (may exceed the limit right after it was lowered).
    pub fn in_flight(&self) -> u32 {
        in_flight_of(self.state.load(SeqCst))
    }

    /// Waiters queued.
    pub fn waiting(&self) -> u32 {
        waiters_of(self.state.load(SeqCst))
    }

    /// Takes a permit if one is free and nobody waits for one; returns
    /// `in_flight` after taking it.
    #[inline]
    pub fn try_acquire(&self) -> Option<u32> {
        let mut cur = self.state.load(SeqCst);
        loop {
            if waiters_of(cur) != 0 || in_flight_of(cur) >= self.limit.load(SeqCst) {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(cur, cur + 1, SeqCst, SeqCst)
            {
                Ok(_) => return Some(in_flight_of(cur) + 1),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives one permit back, handing it to a waiter if one is queued and
    /// the limit allows. Returns whether the queue was involved.
    #[inline]
    pub fn release(&self) -> bool {
        let mut cur = self.state.load(SeqCst);
        loop {
            if waiters_of(cur) != 0 {
                self.release_slow();
                return true;
            }
            debug_assert!(in_flight_of(cur) > 0, "released a permit never acquired");
            match self
                .state
                .compare_exchange_weak(cur, cur - 1, SeqCst, SeqCst)
            {
                Ok(_) => return false,
                Err(actual) => cur = actual,
            }
        }
    }

    #[cold]
    fn release_slow(&self) {
        self.locked(|_| {
            self.state.fetch_sub(1, SeqCst);
        });
    }

    /// Takes a permit if one is free, else queues a waiter unless
    /// `max_queue` waiters are queued already.
    pub fn enqueue(&self, max_queue: u32) -> Enqueued {
        self.locked(|q| {
            let mut cur = self.state.load(SeqCst);
            loop {
                if waiters_of(cur) == 0 && in_flight_of(cur) < self.limit.load(SeqCst) {
                    match self.state.compare_exchange(cur, cur + 1, SeqCst, SeqCst) {
                        Ok(_) => return Enqueued::Acquired(in_flight_of(cur) + 1),
                        Err(actual) => {
                            cur = actual;
                            continue;
                        }
                    }
                }
                if waiters_of(cur) >= max_queue {
                    return Enqueued::Full;
                }
                match self
                    .state
                    .compare_exchange(cur, cur + WAITER, SeqCst, SeqCst)
                {
                    Ok(_) => break,
                    Err(actual) => cur = actual,
                }
            }
            let waiter = Arc::new(Waiter::new());
            q.push_back(waiter.clone());
            Enqueued::Queued(waiter)
        })
    }

    /// Takes `waiter` out of the queue. Returns `Some(in_flight)` if a
    /// permit had been handed to it already: the caller now holds that
    /// permit and must release it.
    pub fn cancel(&self, waiter: &Arc<Waiter>) -> Option<u32> {
        let mut q = self.queue.lock();
        match waiter.status.load(SeqCst) {
            GRANTED => Some(waiter.in_flight.load(SeqCst)),
            WAITING => {
                let at = if self.lifo {
                    q.iter().rposition(|w| Arc::ptr_eq(w, waiter))
                } else {
                    q.iter().position(|w| Arc::ptr_eq(w, waiter))
                };
                if let Some(i) = at {
                    q.remove(i);
                    self.state.fetch_sub(WAITER, SeqCst);
                }
                waiter.status.store(REMOVED, SeqCst);
                None
            }
            _ => None,
        }
    }

    /// Sets the limit and returns the previous one. Raising it hands the new
    /// permits to waiters; lowering it revokes nothing.
    pub fn set_limit(&self, limit: u32) -> u32 {
        if self.limit.load(SeqCst) == limit {
            return limit;
        }
        // Under the lock, so an enqueue either sees the new limit or has
        // queued its waiter for this drain to find.
        self.locked(|_| self.limit.swap(limit, SeqCst))
    }

    /// Runs `f` under the lock and drains the queue before unlocking, so
    /// that whatever `f` changed leaves no waiter behind a free permit;
    /// granted waiters are woken once the lock is released.
    fn locked<R>(&self, f: impl FnOnce(&mut VecDeque<Arc<Waiter>>) -> R) -> R {
        let mut wakes = WakeList::new();
        let mut q = self.queue.lock();
        let result = f(&mut q);
        while self.drain_locked(&mut q, &mut wakes) {
            // The wake list is full: wake those outside the lock, then on.
            drop(q);
            wakes.wake_all();
            q = self.queue.lock();
        }
        drop(q);
        wakes.wake_all();
        result
    }

    /// Hands permits to waiters while both exist. Returns `true` when it
    /// stopped because `wakes` is full and more may be granted.
    fn drain_locked(&self, q: &mut VecDeque<Arc<Waiter>>, wakes: &mut WakeList) -> bool {
        loop {
            let cur = self.state.load(SeqCst);
            if waiters_of(cur) == 0 || in_flight_of(cur) >= self.limit.load(SeqCst) {
                return false;
            }
            if wakes.is_full() {
                return true;
            }
            if self
                .state
                .compare_exchange(cur, cur + 1 - WAITER, SeqCst, SeqCst)
                .is_err()
            {
                continue;
            }
            let waiter = if self.lifo {
                q.pop_back()
            } else {
                q.pop_front()
            }
            .expect("the waiter count matches the queue under the lock");
            waiter.in_flight.store(in_flight_of(cur) + 1, SeqCst);
            waiter.status.store(GRANTED, SeqCst);
            let waker = waiter.waker.lock().take();
            if let Some(w) = waker {
                wakes.push(w);
            }
        }
    }
}

#[cfg(all(test, not(watertight_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::task::Waker;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    fn granted(w: &Waiter) -> bool {
        w.poll_granted(&mut cx()).is_ready()
    }

    #[test]
    fn acquires_up_to_the_limit() {
        let s = Semaphore::new(2, false);
        assert_eq!(s.try_acquire(), Some(1));
        assert_eq!(s.try_acquire(), Some(2));
        assert_eq!(s.try_acquire(), None);
        assert!(!s.release());
        assert_eq!(s.try_acquire(), Some(2));
    }

    #[test]
    fn release_hands_the_permit_to_the_oldest_waiter_in_fifo() {
        let s = Semaphore::new(1, false);
        s.try_acquire().unwrap();
        let Enqueued::Queued(a) = s.enqueue(2) else {
            panic!("queued")
        };
        let Enqueued::Queued(b) = s.enqueue(2) else {
            panic!("queued")
        };
        assert!(matches!(s.enqueue(2), Enqueued::Full));
        assert!(
            s.try_acquire().is_none(),
            "newcomers never overtake the queue"
        );
        assert!(s.release());
        assert!(granted(&a) && !granted(&b));
        assert_eq!((s.in_flight(), s.waiting()), (1, 1));
    }

    #[test]
    fn release_hands_the_permit_to_the_newest_waiter_in_lifo() {
        let s = Semaphore::new(1, true);
        s.try_acquire().unwrap();
        let Enqueued::Queued(a) = s.enqueue(2) else {
            panic!("queued")
        };
        let Enqueued::Queued(b) = s.enqueue(2) else {
            panic!("queued")
        };
        s.release();
        assert!(granted(&b) && !granted(&a));
    }

    #[test]
    fn raising_the_limit_grants_waiters_and_lowering_revokes_nothing() {
        let s = Semaphore::new(1, false);
        s.try_acquire().unwrap();
        let waiters: Vec<_> = (0..10)
            .map(|_| match s.enqueue(100) {
                Enqueued::Queued(w) => w,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(s.set_limit(11), 1);
        assert!(waiters.iter().all(|w| granted(w)), "more than a wake list");
        assert_eq!((s.in_flight(), s.waiting()), (11, 0));
        s.set_limit(2);
        assert_eq!(s.in_flight(), 11, "held permits stay valid");
        for _ in 0..9 {
            s.release();
        }
        assert!(s.try_acquire().is_none(), "2 in flight, limit 2");
        s.release();
        assert_eq!(s.try_acquire(), Some(2));
    }

    #[test]
    fn cancelling_a_granted_waiter_hands_its_permit_to_the_caller() {
        let s = Semaphore::new(1, false);
        s.try_acquire().unwrap();
        let Enqueued::Queued(a) = s.enqueue(1) else {
            panic!("queued")
        };
        s.release();
        assert_eq!(s.cancel(&a), Some(1));
        s.release();
        assert_eq!((s.in_flight(), s.waiting()), (0, 0));
    }

    #[derive(Clone, Debug)]
    enum Op {
        TryAcquire,
        Enqueue(u32),
        Release(usize),
        Cancel(usize),
        Poll(usize),
        SetLimit(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::TryAcquire),
            3 => (0u32..4).prop_map(Op::Enqueue),
            3 => any::<usize>().prop_map(Op::Release),
            1 => any::<usize>().prop_map(Op::Cancel),
            2 => any::<usize>().prop_map(Op::Poll),
            1 => (0u32..5).prop_map(Op::SetLimit),
        ]
    }

    /// The reference: a counter, a limit and a list of waiter ids.
    #[derive(Default)]
    struct Model {
        limit: u32,
        in_flight: u32,
        queue: Vec<usize>,
        granted: Vec<usize>,
        lifo: bool,
    }

    impl Model {
        fn drain(&mut self) {
            while !self.queue.is_empty() && self.in_flight < self.limit {
                let id = if self.lifo {
                    self.queue.pop().unwrap()
                } else {
                    self.queue.remove(0)
                };
                self.in_flight += 1;
                self.granted.push(id);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn semaphore_agrees_with_its_model(
            limit in 0u32..4,
            lifo in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let s = Semaphore::new(limit, lifo);
            let mut m = Model { limit, lifo, ..Model::default() };
            // Permits held by the test: `None` for direct acquires, the
            // waiter id for granted waiters (once the test polled them).
            let mut held: Vec<Option<usize>> = Vec::new();
            let mut waiters: Vec<(usize, Arc<Waiter>)> = Vec::new();
            let mut next_id = 0;
            for op in ops {
                match op {
                    Op::TryAcquire => {
                        let got = s.try_acquire();
                        let expect = m.queue.is_empty() && m.in_flight < m.limit;
                        prop_assert_eq!(got.is_some(), expect);
                        if expect {
                            m.in_flight += 1;
                            prop_assert_eq!(got, Some(m.in_flight));
                            held.push(None);
                        }
                    }
                    Op::Enqueue(max) => match s.enqueue(max) {
                        Enqueued::Acquired(_) => {
                            prop_assert!(m.queue.is_empty() && m.in_flight < m.limit);
                            m.in_flight += 1;
                            held.push(None);
                        }
                        Enqueued::Full => {
                            prop_assert!(m.in_flight >= m.limit || !m.queue.is_empty());
                            prop_assert!(m.queue.len() as u32 >= max);
                        }
                        Enqueued::Queued(w) => {
                            prop_assert!(m.in_flight >= m.limit || !m.queue.is_empty());
                            m.queue.push(next_id);
                            m.drain();
                            waiters.push((next_id, w));
                            next_id += 1;
                        }
                    },
                    Op::Release(i) if !held.is_empty() => {
                        held.swap_remove(i % held.len());
                        m.in_flight -= 1;
                        m.drain();
                        s.release();
                    }
                    Op::Cancel(i) if !waiters.is_empty() => {
                        let (id, w) = waiters.swap_remove(i % waiters.len());
                        let was_granted = m.granted.contains(&id);
                        let got = s.cancel(&w);
                        prop_assert_eq!(got.is_some(), was_granted);
                        if was_granted {
                            m.granted.retain(|g| *g != id);
                            m.in_flight -= 1;
                            m.drain();
                            s.release();
                        } else {
                            m.queue.retain(|q| *q != id);
                        }
                    }
                    Op::Poll(i) if !waiters.is_empty() => {
                        let at = i % waiters.len();
                        let id = waiters[at].0;
                        let ready = granted(&waiters[at].1);
                        prop_assert_eq!(ready, m.granted.contains(&id));
                        if ready {
                            waiters.swap_remove(at);
                            m.granted.retain(|g| *g != id);
                            held.push(Some(id));
                        }
                    }
                    Op::SetLimit(l) => {
                        prop_assert_eq!(s.set_limit(l), m.limit);
                        m.limit = l;
                        m.drain();
                    }
                    _ => {}
                }
                prop_assert_eq!(s.in_flight(), m.in_flight);
                prop_assert_eq!(s.waiting() as usize, m.queue.len());
                prop_assert_eq!(s.limit(), m.limit);
                prop_assert!(
                    m.queue.is_empty() || m.in_flight >= m.limit,
                    "a waiter was left behind a free permit"
                );
            }
        }
    }
}
