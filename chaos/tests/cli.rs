//! The `watertight-chaos` binary against a service's admin API on a real
//! socket: commands, output and exit codes.

mod support;

use serde_json::Value;
use watertight_chaos::admin::{Admin, AdminServer};
use watertight_chaos::{Action, ChaosController, Origin};

use support::*;

const TOKEN: &str = "cli-token";

async fn serve(chaos: &ChaosController) -> (AdminServer, String) {
    let server = Admin::new(chaos.clone())
        .token(TOKEN)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    (server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_starts_lists_stops_and_halts_through_the_admin_api() {
    let chaos = controller();
    let (_server, url) = serve(&chaos).await;
    let base = ["--url", url.as_str(), "--token", TOKEN];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }

    let out = chaos_cli(&with(
        &base,
        &[
            "start",
            "--name",
            "cli-e",
            "--duration",
            "10m",
            "--latency",
            "20ms",
            "--percent",
            "5",
            "--zone",
            "c",
        ],
    ))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("started `cli-e` for 10m"),
        "{}",
        stdout(&out)
    );
    let status = chaos.experiment("cli-e").expect("started on the service");
    assert_eq!(status.experiment.target.zone.as_deref(), Some("c"));
    assert_eq!(status.origin, Origin::Admin);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("game-day.toml");
    std::fs::write(
        &file,
        "name = \"from-file\"\nduration = \"5m\"\n[[faults]]\ntype = \"abort\"\npercent = 1\nstatus = 503\n",
    )
    .unwrap();
    let out = chaos_cli(&with(&base, &["start", "--file", file.to_str().unwrap()])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(chaos.experiment("from-file").is_some());

    let out = chaos_cli(&with(&base, &["list"])).await;
    assert!(out.status.success());
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[0].contains("REMAINING") && lines[0].contains("FAULTS"));
    assert!(
        lines[1].starts_with("cli-e") && lines[1].contains("zone=c"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("from-file") && lines[2].contains("abort 503 on 1%"),
        "{table}"
    );

    let out = chaos_cli(&with(&base, &["--json", "list"])).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["name"], "cli-e");

    let out = chaos_cli(&with(&base, &["stop", "cli-e"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "stopped `cli-e`\n");
    assert!(chaos.experiment("cli-e").is_none());

    let out = chaos_cli(&with(&base, &["--json", "halt"])).await;
    let halted: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(halted["halted"], serde_json::json!(["from-file"]));
    assert!(chaos.experiments().is_empty());

    let out = chaos_cli(&with(&base, &["audit"])).await;
    assert!(out.status.success());
    let audit = stdout(&out);
    assert!(audit.lines().next().unwrap().starts_with("SEQ"), "{audit}");
    assert_eq!(audit.lines().count(), 1 + 4, "{audit}");
    let actions: Vec<Action> = chaos.audit().iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [Action::Start, Action::Start, Action::Stop, Action::Halt]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_exit_codes_say_what_went_wrong() {
    let chaos = controller();
    let (_server, url) = serve(&chaos).await;
    let start = |token: &'static str, extra: &'static [&'static str]| {
        let mut args = vec!["--url", url.as_str(), "--token", token, "start"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        chaos_cli(&refs).await
    };

    // A wrong token: refused.
    let out = run(start(
        "wrong",
        &["--name", "x", "--duration", "1m", "--hang"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("token is wrong"), "{}", stderr(&out));

    // Invalid: the service names the field.
    let out = run(start(TOKEN, &["--name", "x", "--duration", "2h", "--hang"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`duration`"), "{}", stderr(&out));

    // Invalid before leaving the machine.
    let out = run(start(
        TOKEN,
        &["--name", "x y", "--duration", "1m", "--hang"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`name`"), "{}", stderr(&out));

    // An unknown fault type in a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.json");
    std::fs::write(
        &file,
        r#"{"name": "x", "duration": "1m", "faults": [{"type": "gremlins", "percent": 1}]}"#,
    )
    .unwrap();
    let args = vec![
        "--url".to_owned(),
        url.clone(),
        "start".to_owned(),
        "--file".to_owned(),
        file.to_str().unwrap().to_owned(),
    ];
    let out = run(args).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("unknown fault type \"gremlins\""),
        "{}",
        stderr(&out)
    );

    // Unknown experiment.
    let args = ["--url", url.as_str(), "--token", TOKEN, "stop", "nope"];
    let out = chaos_cli(&args).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no experiment named `nope`"),
        "{}",
        stderr(&out)
    );

    // Usage errors.
    let out = chaos_cli(&["list"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--url"), "{}", stderr(&out));
    let out = chaos_cli(&[
        "--url",
        url.as_str(),
        "start",
        "--name",
        "x",
        "--duration",
        "1m",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let out = chaos_cli(&["--url", url.as_str(), "explode"]).await;
    assert_eq!(out.status.code(), Some(2));

    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let closed_url = format!("http://{closed}");
    let out = chaos_cli(&["--url", closed_url.as_str(), "--timeout", "5s", "list"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("cannot reach the admin API"),
        "{}",
        stderr(&out)
    );

    assert!(chaos.experiments().is_empty(), "nothing was started");
}
