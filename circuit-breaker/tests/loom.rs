//! Model-checks the half-open probe permits under every interleaving loom
//! explores: `RUSTFLAGS="--cfg watertight_loom" cargo test --release --test loom`.
#![cfg(watertight_loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use loom::thread;
use watertight_circuit_breaker::probe::ProbeGate;

#[test]
fn racing_probes_never_exceed_the_permitted_count() {
    loom::model(|| {
        let gate = Arc::new(ProbeGate::new(1));
        gate.reset(1);
        let holders = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (gate, holders) = (gate.clone(), holders.clone());
                thread::spawn(move || {
                    if let Some(p) = gate.acquire(1) {
                        assert_eq!(holders.fetch_add(1, SeqCst), 0, "two probes at once");
                        holders.fetch_sub(1, SeqCst);
                        drop(p);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(gate.in_flight(), 0, "a permit leaked");
    });
}

#[test]
fn each_success_is_counted_once() {
    loom::model(|| {
        let gate = Arc::new(ProbeGate::new(2));
        gate.reset(1);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let gate = gate.clone();
                thread::spawn(move || gate.acquire(1).expect("two permits").succeed())
            })
            .collect();
        let mut counts: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        counts.sort();
        assert_eq!(
            counts,
            [Some(1), Some(2)],
            "exactly one probe saw the threshold"
        );
        assert_eq!((gate.in_flight(), gate.successes()), (0, 2));
    });
}

#[test]
fn a_cancelled_probe_and_a_successful_one_race() {
    loom::model(|| {
        let gate = Arc::new(ProbeGate::new(2));
        gate.reset(1);
        let a = gate.acquire(1).unwrap();
        let b = gate.acquire(1).unwrap();
        let t1 = thread::spawn(move || drop(a));
        let t2 = thread::spawn(move || b.succeed());
        t1.join().unwrap();
        assert_eq!(t2.join().unwrap(), Some(1));
        assert_eq!((gate.in_flight(), gate.successes()), (0, 1));
    });
}

#[test]
fn a_permit_of_an_earlier_period_never_frees_one_of_the_next() {
    loom::model(|| {
        let gate = Arc::new(ProbeGate::new(1));
        gate.reset(1);
        let old = gate.acquire(1).unwrap();
        let g = gate.clone();
        let next = thread::spawn(move || {
            g.reset(2);
            g.acquire(2).expect("a new period has its own permit")
        });
        let late = thread::spawn(move || old.succeed());
        let held = next.join().unwrap();
        let late = late.join().unwrap();
        // The old permit either came back before the new period started, or
        // counts nothing in it.
        assert!(late.is_none() || late == Some(1));
        assert_eq!((gate.in_flight(), gate.successes()), (1, 0));
        assert!(
            gate.acquire(2).is_none(),
            "the new period's only permit is held"
        );
        drop(held);
        assert_eq!(gate.in_flight(), 0);
    });
}

#[test]
fn probes_racing_a_new_period_leave_it_clean() {
    loom::model(|| {
        let gate = Arc::new(ProbeGate::new(1));
        gate.reset(1);
        let probes: Vec<_> = (0..2)
            .map(|i| {
                let gate = gate.clone();
                thread::spawn(move || {
                    if let Some(p) = gate.acquire(1) {
                        if i == 0 {
                            let _ = p.succeed();
                        }
                    }
                })
            })
            .collect();
        let g = gate.clone();
        let reset = thread::spawn(move || g.reset(2));
        for t in probes {
            t.join().unwrap();
        }
        reset.join().unwrap();
        // Whatever the interleaving, the new period starts with no probe in
        // flight and no success.
        assert_eq!((gate.in_flight(), gate.successes()), (0, 0));
        let p = gate.acquire(2).expect("the new period's permit is free");
        assert!(gate.acquire(2).is_none());
        drop(p);
    });
}
