//! Configuration read with serde, validated with errors naming the field.

use watertight_loadbalance::{Config, LocalityPolicy, Pick};

#[test]
fn config_reads_from_toml() {
    let config: Config = toml::from_str(
        r#"
        name = "payments"
        local_locality = { zone = "eu-west-1a" }
        locality = { kind = "zone_aware", min_cluster_size = 3 }
        subsets = { key = "version", shares = [{ value = "v2", share = 0.05 }] }
        pick = { kind = "p2c", load = "least_requests" }
        peak_ewma = { decay = "5s", default_rtt = "20ms" }
        slow_start = { window = "30s" }
        outlier_detection = { interval = "5s", max_ejection_percent = 20.0 }
        "#,
    )
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.name, "payments");
    assert!(matches!(config.locality, LocalityPolicy::ZoneAware(z) if z.min_cluster_size == 3));
    assert!(matches!(config.pick, Pick::P2c { .. }));
    let od = config.outlier_detection.unwrap();
    assert_eq!(od.interval, std::time::Duration::from_secs(5));
    assert_eq!(od.consecutive_5xx, Some(5));
}

#[test]
fn bad_configs_name_the_field() {
    let err = toml::from_str::<Config>("nmae = \"x\"").unwrap_err();
    assert!(err.to_string().contains("nmae"), "{err}");
    let config: Config = toml::from_str("healthy_panic_threshold = 150.0").unwrap();
    let err = config.validate().unwrap_err();
    assert_eq!(err.field(), "healthy_panic_threshold");
    assert_eq!(
        err.to_string(),
        "invalid load balancer configuration: `healthy_panic_threshold` must be a percentage in [0, 100], got 150"
    );
    let config: Config =
        toml::from_str("outlier_detection = { enforcing_success_rate = 120 }").unwrap();
    let err = config.validate().unwrap_err();
    assert_eq!(err.field(), "outlier_detection.enforcing_success_rate");
    assert_eq!(err.reason(), "must be a percentage in [0, 100], got 120");
    let config: Config = toml::from_str("locality = { kind = \"prefer_local\" }").unwrap();
    assert_eq!(config.validate().unwrap_err().field(), "local_locality");
}
