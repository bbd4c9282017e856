//! Admission: client-side throttling against the SRE book's formula.

mod support;

use std::time::Duration;

use tower::{service_fn, Layer, Service, ServiceExt};
use watertight_bulkhead::error::Throttled;
use watertight_bulkhead::{
    Admission, AdmissionBuilder, AdmissionConfig, AdmissionHandle, AdmissionLayer,
};
use watertight_core::classify::classify_fn;
use watertight_core::{find_cause, BoxError, ResponseClass};

use support::Recorder;

type Backend = tower::util::BoxCloneSyncService<bool, (), BoxError>;

/// A backend that accepts the requests whose payload is `true` and rejects
/// the others (a `503`: a retryable failure).
fn backend() -> Backend {
    tower::util::BoxCloneSyncService::new(service_fn(|accept: bool| async move {
        if accept {
            Ok(())
        } else {
            Err::<(), BoxError>("503 service unavailable".into())
        }
    }))
}

fn admission(builder: AdmissionBuilder) -> Admission<Backend> {
    builder.build().unwrap().layer(backend())
}

/// `min(0.8, max(0, (requests − 2·accepts) / (requests + 1)))`.
fn formula(h: &AdmissionHandle) -> f64 {
    let (r, a) = (h.requests() as f64, h.accepts() as f64);
    ((r - 2.0 * a) / (r + 1.0)).clamp(0.0, 0.8)
}

/// Sends one request; whether it was rejected locally.
async fn send(svc: &mut Admission<Backend>, accept: bool) -> bool {
    match svc.ready().await.unwrap().call(accept).await {
        Ok(()) => false,
        Err(e) => find_cause::<Throttled>(&*e).is_some(),
    }
}

#[tokio::test(start_paused = true)]
async fn rejection_probability_is_the_formula_over_the_window() {
    let mut svc = admission(AdmissionLayer::builder().seed(1));
    let h = svc.handle();
    assert_eq!(h.probability(), 0.0);
    for _ in 0..10 {
        send(&mut svc, true).await;
    }
    assert_eq!((h.requests(), h.accepts(), h.probability()), (10, 10, 0.0));
    // Failures: from 10 more on, requests exceed twice the accepts.
    let mut checked = 0;
    for _ in 0..200 {
        let (r, a) = (h.requests(), h.accepts());
        let p = h.probability();
        assert_eq!(p, formula(&h));
        if r > 2 * a {
            assert!(p > 0.0);
            checked += 1;
        } else {
            assert_eq!(p, 0.0);
        }
        send(&mut svc, false).await;
    }
    assert!(checked > 150);
    assert_eq!(h.probability(), 0.8, "capped at max_probability");
}

#[tokio::test(start_paused = true)]
async fn local_rejections_match_the_formula_within_sampling_error() {
    let mut svc = admission(AdmissionLayer::builder().seed(42));
    let h = svc.handle();
    let (mut expected, mut variance, mut rejected) = (0.0, 0.0, 0u32);
    for i in 0..6_000u32 {
        // The backend accepts 3 of every 10 requests it gets.
        let p = formula(&h);
        expected += p;
        variance += p * (1.0 - p);
        if send(&mut svc, i % 10 < 3).await {
            rejected += 1;
        }
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    let sigma = variance.sqrt();
    println!("rejected {rejected} locally, expected {expected:.0} ± {sigma:.0}");
    assert!(
        expected > 1_000.0,
        "the backend rejected enough to throttle"
    );
    assert!(
        (f64::from(rejected) - expected).abs() <= 4.0 * sigma,
        "rejected {rejected}, expected {expected:.1} ± {sigma:.1}"
    );
    assert_eq!(u64::from(rejected), h.throttled());
}

#[tokio::test(start_paused = true)]
async fn nothing_is_rejected_while_the_backend_accepts_more_than_half() {
    let mut svc = admission(AdmissionLayer::builder().seed(3));
    for i in 0..2_000u32 {
        assert!(!send(&mut svc, i % 10 < 6).await, "request {i} throttled");
    }
    assert_eq!(svc.handle().throttled(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_window_forgets_old_rejections() {
    let mut svc = admission(
        AdmissionLayer::builder()
            .seed(5)
            .window(Duration::from_secs(30)),
    );
    let h = svc.handle();
    for _ in 0..50 {
        send(&mut svc, false).await;
    }
    assert!(h.probability() > 0.7);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!((h.requests(), h.probability()), (0, 0.0));
}

#[tokio::test(start_paused = true)]
async fn non_retryable_failures_are_accepts_and_ignored_results_count_nowhere() {
    let classify = classify_fn(|r: &Result<(), BoxError>| match r {
        Ok(()) => ResponseClass::Ignored,
        Err(_) => ResponseClass::FATAL,
    });
    let mut svc = AdmissionLayer::builder()
        .classify(classify)
        .build()
        .unwrap()
        .layer(backend());
    let h = svc.handle();
    svc.ready().await.unwrap().call(true).await.unwrap();
    assert_eq!(h.requests(), 0, "ignored");
    svc.ready().await.unwrap().call(false).await.unwrap_err();
    assert_eq!(
        (h.requests(), h.accepts()),
        (1, 1),
        "the backend took it and answered"
    );

    // A cancelled call counts nowhere either.
    let mut slow = AdmissionLayer::default().layer(service_fn(|_: ()| {
        std::future::pending::<Result<(), BoxError>>()
    }));
    drop(slow.ready().await.unwrap().call(()));
    assert_eq!(slow.handle().requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn seeded_layers_reject_the_same_requests() {
    async fn pattern() -> Vec<bool> {
        let mut svc = admission(AdmissionLayer::builder().seed(9));
        let mut out = Vec::new();
        for _ in 0..200 {
            out.push(send(&mut svc, false).await);
        }
        out
    }
    let (a, b) = (pattern().await, pattern().await);
    assert_eq!(a, b);
    assert!(a.iter().any(|r| *r) && a.iter().any(|r| !*r));
}

#[tokio::test(start_paused = true)]
async fn throttled_error_names_the_probability_and_metrics_follow() {
    let recorder = Recorder::default();
    let mut svc = recorder.with(|| {
        admission(
            AdmissionLayer::builder()
                .name("inventory")
                .seed(2)
                .max_probability(1.0)
                .retry_after(Duration::from_secs(3)),
        )
    });
    let at_start = recorder.snapshot();
    let name = [("name", "inventory")];
    assert_eq!(
        at_start.get("watertight_admission_rejection_probability", &name),
        Some(0.0)
    );
    let mut throttled = None;
    for _ in 0..100 {
        if let Err(e) = svc.ready().await.unwrap().call(false).await {
            if let Some(t) = find_cause::<Throttled>(&*e) {
                throttled = Some(t.clone());
            }
        }
    }
    let t = throttled.expect("throttled at least once");
    assert_eq!(t.retry_after(), Duration::from_secs(3));
    assert!(t
        .to_string()
        .starts_with("request throttled locally (rejection probability 0."));
    let values = recorder.snapshot();
    let outcome = |o| {
        values.get(
            "watertight_admission_requests_total",
            &[("name", "inventory"), ("outcome", o)],
        )
    };
    assert_eq!(
        outcome("throttled").unwrap() + outcome("refused").unwrap(),
        100.0
    );
    let p = values
        .get("watertight_admission_rejection_probability", &name)
        .unwrap();
    assert!(p > 0.9, "{p}");
}

#[test]
fn invalid_configuration_names_the_field() {
    let err = |b: AdmissionBuilder| b.build().unwrap_err().field().to_owned();
    assert_eq!(err(AdmissionLayer::builder().k(0.5)), "k");
    assert_eq!(err(AdmissionLayer::builder().k(f64::NAN)), "k");
    assert_eq!(
        err(AdmissionLayer::builder().window(Duration::ZERO)),
        "window"
    );
    assert_eq!(
        err(AdmissionLayer::builder().max_probability(0.0)),
        "max_probability"
    );
    assert_eq!(
        err(AdmissionLayer::builder().max_probability(1.5)),
        "max_probability"
    );
    assert_eq!(err(AdmissionLayer::builder().name("")), "name");
}

#[test]
fn defaults_are_the_sre_book_and_envoy() {
    let c = AdmissionConfig::default();
    assert_eq!(
        (c.k, c.window, c.max_probability),
        (2.0, Duration::from_secs(30), 0.8)
    );
}

#[cfg(feature = "serde")]
#[test]
fn toml_configuration_is_validated() {
    let c: AdmissionConfig = toml::from_str("k = 1.5\nwindow = \"1m\"\nseed = 4").unwrap();
    assert_eq!(
        (c.k, c.window, c.seed),
        (1.5, Duration::from_secs(60), Some(4))
    );
    AdmissionLayer::from_config(c).unwrap();
    let err = toml::from_str::<AdmissionConfig>("max_probability = 0").unwrap_err();
    assert!(err.to_string().contains("`max_probability`"), "{err}");
}
