//! Model-checks the permit logic under every interleaving loom explores:
//! `RUSTFLAGS="--cfg watertight_loom" cargo test --release --test loom`.
#![cfg(watertight_loom)]

use std::future::poll_fn;
use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;
use watertight_bulkhead::gate::Gate;
use watertight_bulkhead::semaphore::{Enqueued, Semaphore};

/// Waits (parking the loom thread) until the waiter is granted.
fn wait_granted(s: &Semaphore, max_queue: u32) -> u32 {
    match s.enqueue(max_queue) {
        Enqueued::Acquired(n) => n,
        Enqueued::Queued(w) => loom::future::block_on(poll_fn(|cx| w.poll_granted(cx))),
        Enqueued::Full => panic!("the queue has room"),
    }
}

#[test]
fn racing_acquires_never_exceed_the_limit() {
    loom::model(|| {
        let s = Arc::new(Semaphore::new(1, false));
        let holders = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (s, holders) = (s.clone(), holders.clone());
                thread::spawn(move || {
                    if s.try_acquire().is_some() {
                        assert_eq!(holders.fetch_add(1, SeqCst), 0, "two permits of one");
                        holders.fetch_sub(1, SeqCst);
                        s.release();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!((s.in_flight(), s.waiting()), (0, 0), "a permit leaked");
    });
}

#[test]
fn a_release_hands_its_permit_to_the_waiter_and_wakes_it() {
    loom::model(|| {
        let s = Arc::new(Semaphore::new(1, false));
        assert_eq!(s.try_acquire(), Some(1));
        let waiter = {
            let s = s.clone();
            thread::spawn(move || {
                // Never more than the one permit: the holder released first.
                assert_eq!(wait_granted(&s, 1), 1);
                s.release();
            })
        };
        s.release();
        waiter.join().unwrap();
        assert_eq!((s.in_flight(), s.waiting()), (0, 0));
    });
}

#[test]
fn raising_the_limit_wakes_a_waiter() {
    loom::model(|| {
        let s = Arc::new(Semaphore::new(1, true));
        assert_eq!(s.try_acquire(), Some(1));
        let waiter = {
            let s = s.clone();
            thread::spawn(move || {
                assert_eq!(wait_granted(&s, 1), 2);
                s.release();
            })
        };
        let resizer = {
            let s = s.clone();
            thread::spawn(move || {
                s.set_limit(2);
            })
        };
        resizer.join().unwrap();
        waiter.join().unwrap();
        s.release();
        assert_eq!((s.in_flight(), s.waiting()), (0, 0));
    });
}

#[test]
fn a_cancel_racing_a_grant_never_leaks_the_permit() {
    loom::model(|| {
        let s = Arc::new(Semaphore::new(1, false));
        assert_eq!(s.try_acquire(), Some(1));
        let Enqueued::Queued(w) = s.enqueue(1) else {
            panic!("queued behind the holder")
        };
        let releaser = {
            let s = s.clone();
            thread::spawn(move || {
                s.release();
            })
        };
        if s.cancel(&w).is_some() {
            // Granted before the cancel: the canceller owns it now.
            s.release();
        }
        releaser.join().unwrap();
        assert_eq!((s.in_flight(), s.waiting()), (0, 0), "a permit leaked");
    });
}

#[test]
fn lowering_the_limit_while_a_waiter_waits_hands_over_only_below_it() {
    loom::model(|| {
        let s = Arc::new(Semaphore::new(2, false));
        assert_eq!(s.try_acquire(), Some(1));
        assert_eq!(s.try_acquire(), Some(2));
        let Enqueued::Queued(w) = s.enqueue(1) else {
            panic!("queued behind the holders")
        };
        let shrinker = {
            let s = s.clone();
            thread::spawn(move || {
                s.set_limit(1);
                s.release();
            })
        };
        s.release();
        shrinker.join().unwrap();
        // Both holders left; the waiter got a permit, and only one.
        assert!(w.granted().is_some());
        assert_eq!((s.in_flight(), s.waiting()), (1, 0));
        s.release();
    });
}

#[test]
fn partition_guarantees_hold_and_nothing_leaks_under_races() {
    loom::model(|| {
        // Limit 2; each partition guaranteed ⌈0.5 × 2⌉ = 1.
        let gate = Arc::new(Gate::new(2, &[0.5, 0.5], [1.0, 1.0, 1.0]));
        let borrowers: Vec<_> = (0..2)
            .map(|_| {
                let gate = gate.clone();
                thread::spawn(move || {
                    if gate.try_acquire(0, 1).is_ok() {
                        gate.release(0);
                    }
                })
            })
            .collect();
        // However the borrowers race, partition 1's guarantee is there.
        assert!(gate.try_acquire(1, 1).is_ok(), "guarantee refused");
        gate.release(1);
        for t in borrowers {
            t.join().unwrap();
        }
        assert_eq!(gate.in_flight(), 0, "a permit leaked");
        assert_eq!((gate.part_in_flight(0), gate.part_in_flight(1)), (0, 0));
    });
}

#[test]
fn queued_waiters_each_get_the_permit_in_turn() {
    // Three threads through two locks: bound the preemptions (as tokio's CI
    // does) to keep the exploration to seconds; 4 explores every schedule
    // with up to four forced thread switches.
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(4);
    model.check(|| {
        let s = Arc::new(Semaphore::new(1, false));
        assert_eq!(s.try_acquire(), Some(1));
        let holders = Arc::new(AtomicUsize::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (s, holders) = (s.clone(), holders.clone());
                thread::spawn(move || {
                    wait_granted(&s, 2);
                    assert_eq!(holders.fetch_add(1, SeqCst), 0, "two permits of one");
                    holders.fetch_sub(1, SeqCst);
                    s.release();
                })
            })
            .collect();
        s.release();
        for t in waiters {
            t.join().unwrap();
        }
        assert_eq!((s.in_flight(), s.waiting()), (0, 0));
    });
}
