//! The DNS source against a real DNS server: an in-process hickory-server
//! authoritative zone on a free loopback port (UDP and TCP).

mod support;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use support::{next, next_error, next_reset_ids, reset_ids};
use tokio::net::{TcpListener, UdpSocket};
use tokio::time::Instant;
use watertight_core::{Address, Backoff, Change, Locality};
use watertight_discovery::Dns;

type Zone = InMemoryZoneHandler<TokioRuntimeProvider>;

/// An authoritative server for `svc.test.` whose records the test edits.
struct TestDns {
    addr: SocketAddr,
    zone: Arc<Zone>,
    _server: Server<Catalog>,
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

impl TestDns {
    async fn start() -> TestDns {
        // UDP and TCP on the same free port (TCP carries truncated answers).
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        Self::serve(udp, tcp)
    }

    /// A new server on the address of an old one.
    async fn restart_at(addr: SocketAddr) -> TestDns {
        let udp = UdpSocket::bind(addr).await.unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        Self::serve(udp, tcp)
    }

    fn serve(udp: UdpSocket, tcp: TcpListener) -> TestDns {
        let origin = name("svc.test.");
        let mut zone = Zone::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            name("ns.svc.test."),
            name("admin.svc.test."),
            1,
            60,
            60,
            600,
            1,
        );
        zone.upsert_mut(Record::from_rdata(origin.clone(), 60, RData::SOA(soa)), 1);
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        let handler: Arc<dyn ZoneHandler> = zone.clone();
        catalog.upsert(LowerName::new(&origin), vec![handler]);
        let addr = udp.local_addr().unwrap();
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        TestDns {
            addr,
            zone,
            _server: server,
        }
    }

    /// Replaces the records of `owner`'s `rtype` (none: removes them).
    async fn set(&self, owner: &str, rtype: RecordType, ttl: u32, data: Vec<RData>) {
        let owner = name(owner);
        let key = RrKey::new(LowerName::new(&owner), rtype);
        let mut records = self.zone.records_mut().await;
        if data.is_empty() {
            records.remove(&key);
            return;
        }
        let mut set = RecordSet::new(owner.clone(), rtype, 1);
        for d in data {
            set.insert(Record::from_rdata(owner.clone(), ttl, d), 1);
        }
        records.insert(key, Arc::new(set));
    }

    async fn a(&self, owner: &str, ttl: u32, ips: &[[u8; 4]]) {
        let data = ips
            .iter()
            .map(|ip| RData::A(A(Ipv4Addr::from(*ip))))
            .collect();
        self.set(owner, RecordType::A, ttl, data).await;
    }

    /// SRV records of `owner`: (priority, weight, port, target) each.
    async fn srv(&self, owner: &str, ttl: u32, targets: &[(u16, u16, u16, &str)]) {
        let data = targets
            .iter()
            .map(|&(priority, weight, port, target)| {
                RData::SRV(SRV::new(priority, weight, port, name(target)))
            })
            .collect();
        self.set(owner, RecordType::SRV, ttl, data).await;
    }
}

#[tokio::test]
async fn a_and_aaaa_records_become_endpoints_at_the_port() {
    let dns = TestDns::start().await;
    dns.a("api.svc.test.", 30, &[[10, 0, 0, 1], [10, 0, 0, 2]])
        .await;
    dns.set(
        "api.svc.test.",
        RecordType::AAAA,
        30,
        vec![RData::AAAA(AAAA(Ipv6Addr::new(
            0xfd00, 0, 0, 0, 0, 0, 0, 1,
        )))],
    )
    .await;

    let mut source = Dns::a("api.svc.test.", 8080)
        .nameserver(dns.addr)
        .locality(Locality::zone("a"))
        .label("via", "dns")
        .build()
        .unwrap();
    let change = next(&mut source).await.unwrap();
    assert_eq!(
        reset_ids(&change),
        ["10.0.0.1:8080", "10.0.0.2:8080", "[fd00::1]:8080"]
    );
    let Change::Reset(list) = change else {
        unreachable!()
    };
    assert!(list
        .iter()
        .all(|e| e.locality.zone == "a" && e.labels["via"] == "dns"));
}

#[tokio::test]
async fn srv_records_become_endpoints_with_their_priority_weight_and_port() {
    let dns = TestDns::start().await;
    dns.a("pod-1.api.svc.test.", 30, &[[10, 1, 0, 1]]).await;
    dns.a("pod-2.api.svc.test.", 30, &[[10, 1, 0, 2]]).await;
    dns.srv(
        "_http._tcp.api.svc.test.",
        30,
        &[
            (0, 10, 8080, "pod-1.api.svc.test."),
            (1, 0, 8081, "pod-2.api.svc.test."),
        ],
    )
    .await;

    let mut source = Dns::srv("_http._tcp.api.svc.test.")
        .nameserver(dns.addr)
        .build()
        .unwrap();
    let change = next(&mut source).await.unwrap();
    assert_eq!(reset_ids(&change), ["10.1.0.1:8080", "10.1.0.2:8081"]);
    let Change::Reset(list) = change else {
        unreachable!()
    };
    let p1 = &list[0];
    assert_eq!((p1.priority, p1.weight), (0, 10));
    assert_eq!(p1.labels["srv_target"], "pod-1.api.svc.test");
    let p2 = &list[1];
    assert_eq!((p2.priority, p2.weight), (1, 1), "weight 0 becomes 1");

    // Targets kept as host names.
    let mut hosts = Dns::srv("_http._tcp.api.svc.test.")
        .nameserver(dns.addr)
        .resolve_targets(false)
        .build()
        .unwrap();
    let Change::Reset(list) = next(&mut hosts).await.unwrap() else {
        panic!("expected a reset")
    };
    assert_eq!(
        list[0].addr,
        Address::Host {
            host: "pod-1.api.svc.test".into(),
            port: 8080
        }
    );
}

#[tokio::test]
async fn srv_priorities_beyond_255_are_capped() {
    let dns = TestDns::start().await;
    dns.a("pod-1.api.svc.test.", 30, &[[10, 1, 0, 1]]).await;
    dns.srv(
        "_http._tcp.api.svc.test.",
        30,
        &[(300, 5, 8080, "pod-1.api.svc.test.")],
    )
    .await;
    let mut source = Dns::srv("_http._tcp.api.svc.test.")
        .nameserver(dns.addr)
        .build()
        .unwrap();
    let Change::Reset(list) = next(&mut source).await.unwrap() else {
        panic!("expected a reset")
    };
    assert_eq!((list[0].priority, list[0].weight), (255, 5));
}

#[tokio::test]
async fn a_changed_record_is_picked_up_after_its_ttl() {
    let ttl = 2;
    let dns = TestDns::start().await;
    dns.a("api.svc.test.", ttl, &[[10, 0, 0, 1]]).await;
    let mut source = Dns::a("api.svc.test.", 80)
        .nameserver(dns.addr)
        .min_refresh(Duration::from_millis(100))
        .seed(7)
        .build()
        .unwrap();
    assert_eq!(next_reset_ids(&mut source).await, ["10.0.0.1:80"]);
    let answered = Instant::now();

    dns.a("api.svc.test.", ttl, &[[10, 0, 0, 1], [10, 0, 0, 3]])
        .await;
    let change = next(&mut source).await.unwrap();
    let elapsed = answered.elapsed();
    assert_eq!(reset_ids(&change), ["10.0.0.1:80", "10.0.0.3:80"]);
    assert!(
        elapsed >= Duration::from_secs(ttl.into()),
        "re-queried after {elapsed:?}, before the {ttl} s TTL ran out"
    );
    eprintln!("DNS change picked up {elapsed:?} after the previous answer (TTL {ttl} s, jitter up to 10%)");

    // The record goes away: an empty set, not an error.
    dns.set("api.svc.test.", RecordType::A, ttl, vec![]).await;
    assert_eq!(next_reset_ids(&mut source).await, Vec::<String>::new());
}

#[tokio::test]
async fn a_changed_srv_record_is_picked_up_after_its_ttl() {
    // A headless Service's pods as SRV records: one pod is replaced by
    // another with a different port.
    let ttl = 1;
    let dns = TestDns::start().await;
    dns.a("pod-1.api.svc.test.", ttl, &[[10, 1, 0, 1]]).await;
    dns.a("pod-2.api.svc.test.", ttl, &[[10, 1, 0, 2]]).await;
    dns.a("pod-3.api.svc.test.", ttl, &[[10, 1, 0, 3]]).await;
    dns.srv(
        "_http._tcp.api.svc.test.",
        ttl,
        &[
            (0, 10, 8080, "pod-1.api.svc.test."),
            (0, 10, 8080, "pod-2.api.svc.test."),
        ],
    )
    .await;
    let mut source = Dns::srv("_http._tcp.api.svc.test.")
        .nameserver(dns.addr)
        .min_refresh(Duration::from_millis(100))
        .seed(3)
        .build()
        .unwrap();
    assert_eq!(
        next_reset_ids(&mut source).await,
        ["10.1.0.1:8080", "10.1.0.2:8080"]
    );
    let answered = Instant::now();

    dns.srv(
        "_http._tcp.api.svc.test.",
        ttl,
        &[
            (0, 10, 8080, "pod-1.api.svc.test."),
            (0, 10, 9090, "pod-3.api.svc.test."),
        ],
    )
    .await;
    let change = next(&mut source).await.unwrap();
    let elapsed = answered.elapsed();
    assert_eq!(reset_ids(&change), ["10.1.0.1:8080", "10.1.0.3:9090"]);
    assert!(
        elapsed >= Duration::from_secs(ttl.into()),
        "re-queried after {elapsed:?}, before the {ttl} s TTL ran out"
    );
}

#[tokio::test]
async fn max_refresh_bounds_a_long_ttl() {
    let dns = TestDns::start().await;
    dns.a("api.svc.test.", 3600, &[[10, 0, 0, 1]]).await;
    let mut source = Dns::a("api.svc.test.", 80)
        .nameserver(dns.addr)
        .min_refresh(Duration::from_millis(100))
        .max_refresh(Duration::from_millis(300))
        .build()
        .unwrap();
    next(&mut source).await.unwrap();
    dns.a("api.svc.test.", 3600, &[[10, 0, 0, 2]]).await;
    assert_eq!(next_reset_ids(&mut source).await, ["10.0.0.2:80"]);
}

#[tokio::test]
async fn an_unreachable_server_is_a_backend_error_naming_the_query() {
    // A port nothing listens on.
    let closed = UdpSocket::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut source = Dns::srv("_http._tcp.api.svc.test.")
        .nameserver(closed)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let e = next_error(&mut source).await;
    let backend = e.as_backend().expect("a backend error");
    assert_eq!(backend.source_kind(), "dns");
    assert!(e.to_string().contains("_http._tcp.api.svc.test."), "{e}");
}

#[tokio::test]
async fn after_a_failure_the_same_answer_is_announced_again() {
    let dns = TestDns::start().await;
    dns.a("api.svc.test.", 1, &[[10, 0, 0, 1]]).await;
    let addr = dns.addr;
    let mut source = Dns::a("api.svc.test.", 80)
        .nameserver(addr)
        .timeout(Duration::from_millis(300))
        .error_backoff(Backoff::constant(Duration::from_millis(200)).unwrap())
        .build()
        .unwrap();
    assert_eq!(next_reset_ids(&mut source).await, ["10.0.0.1:80"]);

    drop(dns);
    let e = next_error(&mut source).await;
    assert_eq!(e.as_backend().unwrap().source_kind(), "dns");

    let dns = TestDns::restart_at(addr).await;
    dns.a("api.svc.test.", 1, &[[10, 0, 0, 1]]).await;
    // Errors may repeat until the server answers; then the same set again.
    let change = loop {
        if let Ok(c) = next(&mut source).await {
            break c;
        }
    };
    assert_eq!(reset_ids(&change), ["10.0.0.1:80"]);
}

#[test]
fn invalid_configuration_names_the_field() {
    let e = Dns::a("", 80).build().unwrap_err();
    assert_eq!(e.field(), "name");
    let e = Dns::a("x.", 80)
        .min_refresh(Duration::from_secs(10))
        .max_refresh(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_refresh");
    let e = Dns::srv("x.").jitter(2.0).build().unwrap_err();
    assert_eq!(e.field(), "jitter");
    let e = Dns::srv("x.")
        .min_refresh(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "min_refresh");
    let e = Dns::srv("x.").timeout(Duration::ZERO).build().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid discovery configuration: `timeout` must be greater than zero"
    );
}
