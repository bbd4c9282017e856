//! The traces a breaker emits, read back from the `fmt` subscriber. A
//! binary of its own: the subscriber is global, so no test running
//! alongside can leave a trace's callsite cached as uninteresting.

mod support;

use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use support::*;

/// Where the subscriber writes.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn transitions_are_traced_with_the_key_and_the_open_duration() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .without_time()
        .with_max_level(tracing::Level::DEBUG)
        .init();

    let mut cb = spawn(builder().consecutive_failures(1));
    cb.calls(1, Reply::Err);
    let layer = builder()
        .consecutive_failures(1)
        .keyed(|r: &Req| *r)
        .build()
        .unwrap();
    let mut keyed = Harness::new(layer);
    keyed.call_with("tenant-7", Reply::Err).unwrap_err();

    let log = String::from_utf8(buffer.0.lock().clone()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("circuit breaker state changed"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in &lines {
        assert!(
            line.starts_with(" INFO watertight_circuit_breaker:"),
            "{line}"
        );
        assert!(line.contains(" name=test "), "{line}");
        assert!(line.contains(" from=closed to=open "), "{line}");
        assert!(line.ends_with(" generation=1 open_for=5s"), "{line}");
    }
    assert!(!lines[0].contains("key="), "{}", lines[0]);
    assert!(lines[1].contains(" key=tenant-7 "), "{}", lines[1]);
}
