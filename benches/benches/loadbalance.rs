//! Pick + call through a balancer over 10, 100 and 1,000 ready no-op
//! endpoints: watertight's `Balancer` (P2C over PeakEWMA, and with Envoy
//! zone-aware routing on: three zones, the client's own cluster spread
//! evenly) next to tower's `balance::p2c::Balance` over `PeakEwma`
//! endpoints, in one group.
//!
//! Each iteration is one `poll_ready` and one `call` whose future is polled
//! to completion, with a no-op waker, on one thread. The request type
//! carries no extensions, so watertight's `Selected` note costs nothing
//! here (on an `http::Request` it costs the same map insertion for any
//! layer that adds an extension).

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::Service;
use watertight_benches::stacks::SeededRng;
use watertight_benches::{runtime, NoOp};
use watertight_core::ext::Extensions;
use watertight_core::{Change, Endpoint, Locality};
use watertight_loadbalance::{Builder, ZoneAware};

/// A request without extensions.
#[derive(Clone, Copy, Debug, Default)]
struct Req;

impl Extensions for Req {}

const SIZES: [usize; 3] = [10, 100, 1_000];

fn endpoints(n: usize) -> Vec<Endpoint> {
    (0..n)
        .map(|i| {
            Endpoint::new(
                format!("10.{}.{}.{}:80", i / 65_536, (i / 256) % 256, i % 256)
                    .parse()
                    .unwrap(),
            )
            .with_locality(Locality::zone(["a", "b", "c"][i % 3]))
        })
        .collect()
}

fn once<T>(item: T) -> futures_util::stream::Iter<std::array::IntoIter<Result<T, Infallible>, 1>> {
    futures_util::stream::iter([Ok(item)])
}

/// One pick and one call, driven to completion.
fn pick_and_call<S>(svc: &mut S, cx: &mut Context<'_>)
where
    S: Service<Req>,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("a balancer over ready endpoints is ready"),
    }
    let mut fut = pin!(svc.call(black_box(Req)));
    match fut.as_mut().poll(cx) {
        Poll::Ready(Ok(r)) => {
            black_box(r);
        }
        _ => panic!("no-op endpoints answer at once"),
    }
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("loadbalance/pick_call");
    for n in SIZES {
        let mut plain = Builder::new()
            .seed(1)
            .build(once(Change::Reset(endpoints(n))), |_: &Endpoint| NoOp)
            .expect("valid configuration");
        pick_and_call(&mut plain, &mut cx);
        group.bench_with_input(BenchmarkId::new("watertight_p2c", n), &n, |b, _| {
            b.iter(|| pick_and_call(&mut plain, &mut cx))
        });

        let clients: Vec<Endpoint> = endpoints(3)
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.with_id(format!("client-{i}")))
            .collect();
        let mut zoned = Builder::new()
            .local_zone("a")
            .zone_aware(ZoneAware::default())
            .local_cluster(once(Change::Reset(clients)))
            .seed(1)
            .build(once(Change::Reset(endpoints(n))), |_: &Endpoint| NoOp)
            .expect("valid configuration");
        pick_and_call(&mut zoned, &mut cx);
        assert_eq!(
            zoned.handle().decisions().local,
            1,
            "zone-aware routing is on"
        );
        group.bench_with_input(BenchmarkId::new("watertight_zone_aware", n), &n, |b, _| {
            b.iter(|| pick_and_call(&mut zoned, &mut cx))
        });

        let discover = PeakEwmaDiscover::new::<Req>(
            ServiceList::new::<Req>(vec![NoOp; n]),
            Duration::from_millis(30),
            Duration::from_secs(10),
            CompleteOnResponse::default(),
        );
        let mut tower_p2c = Balance::from_rng(discover, SeededRng::new(1));
        pick_and_call(&mut tower_p2c, &mut cx);
        group.bench_with_input(BenchmarkId::new("tower_p2c", n), &n, |b, _| {
            b.iter(|| pick_and_call(&mut tower_p2c, &mut cx))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
