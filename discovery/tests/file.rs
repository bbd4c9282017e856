//! The file source against a real file system: a temporary directory
//! watched with notify.

mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use support::{ids, next, next_change, next_error, next_reset_ids, reset_ids, until};
use tokio::time::Instant;
use watertight_core::Change;
use watertight_discovery::{File, Guard, SourceExt};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

const TWO: &str = r#"[
  {"addr": "10.0.0.1:80", "locality": {"zone": "a"}},
  {"addr": "10.0.0.2:80", "locality": {"zone": "b"}, "labels": {"version": "v2"}}
]"#;

/// A guard that applies changes at once and never holds, so the file
/// source's own behaviour shows.
fn passthrough() -> Guard {
    Guard::builder()
        .debounce(Duration::ZERO)
        .max_removal_ratio(1.0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_file_created_after_start_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endpoints.json");
    let mut source = File::new(&path).unwrap();

    let e = next_error(&mut source).await;
    let backend = e.as_backend().expect("a backend error");
    assert_eq!(backend.source_kind(), "file");
    assert!(e.to_string().contains("endpoints.json"), "{e}");

    write(&path, TWO);
    let change = next_change(&mut source).await;
    assert_eq!(reset_ids(&change), ["10.0.0.1:80", "10.0.0.2:80"]);
    let Change::Reset(list) = change else {
        unreachable!()
    };
    let v2 = list
        .iter()
        .find(|e| e.id.as_str() == "10.0.0.2:80")
        .unwrap();
    assert_eq!(v2.locality.zone, "b");
    assert_eq!(v2.labels["version"], "v2");
}

#[tokio::test]
async fn edits_are_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endpoints.json");
    write(&path, TWO);
    let mut source = File::new(&path).unwrap();
    assert_eq!(
        next_reset_ids(&mut source).await,
        ["10.0.0.1:80", "10.0.0.2:80"]
    );

    // Add one, re-weight one, drop one.
    write(
        &path,
        r#"[{"addr": "10.0.0.2:80", "weight": 7}, {"addr": "10.0.0.3:80"}]"#,
    );
    let change = next(&mut source).await.unwrap();
    assert_eq!(reset_ids(&change), ["10.0.0.2:80", "10.0.0.3:80"]);
    let Change::Reset(list) = change else {
        unreachable!()
    };
    assert_eq!(list[0].weight, 7);

    // Rewriting the same content says nothing (given time for the event,
    // the debounce and the read); the next real edit is seen.
    write(
        &path,
        r#"[{"addr": "10.0.0.2:80", "weight": 7}, {"addr": "10.0.0.3:80"}]"#,
    );
    let quiet = tokio::time::timeout(Duration::from_secs(1), source.next()).await;
    assert!(quiet.is_err(), "the same content was announced: {quiet:?}");
    write(&path, r#"[{"addr": "10.0.0.3:80"}]"#);
    assert_eq!(next_reset_ids(&mut source).await, ["10.0.0.3:80"]);
}

#[tokio::test]
async fn an_invalid_edit_names_file_line_and_field_and_keeps_the_set() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endpoints.yaml");
    write(&path, "- addr: 10.0.0.1:80\n- addr: 10.0.0.2:80\n");
    let mut guarded = File::new(&path).unwrap().guarded(&passthrough());
    let handle = guarded.handle();
    until(&mut guarded, |seen| seen.len() == 2).await;
    assert_eq!(ids(&handle.endpoints()), ["10.0.0.1:80", "10.0.0.2:80"]);

    write(
        &path,
        "- addr: 10.0.0.1:80\n- addr: 10.0.0.2:80\n  weight: 0\n- addr: 10.0.0.3:80\n",
    );
    let e = next_error(&mut guarded).await;
    let invalid = e.as_invalid_file().expect("an invalid-file error");
    assert_eq!(invalid.path(), path);
    assert_eq!(invalid.line(), Some(3));
    assert_eq!(invalid.field(), Some("[1].weight"));
    let text = e.to_string();
    assert!(
        text.contains("endpoints.yaml") && text.contains("line 3"),
        "{text}"
    );
    assert!(
        text.contains("[1].weight") && text.contains("at least 1"),
        "{text}"
    );
    assert_eq!(ids(&handle.endpoints()), ["10.0.0.1:80", "10.0.0.2:80"]);
    assert_eq!(handle.backend_errors(), 1);

    assert!(handle.staleness() > Duration::ZERO);
    write(&path, "- addr: 10.0.0.2:80\n- addr: 10.0.0.4:80\n");
    until(&mut guarded, |seen| {
        seen.iter()
            .any(|i| matches!(i, Ok(Change::Insert(e)) if e.id.as_str() == "10.0.0.4:80"))
    })
    .await;
    assert_eq!(handle.staleness(), Duration::ZERO);
    assert_eq!(ids(&handle.endpoints()), ["10.0.0.2:80", "10.0.0.4:80"]);
}

#[tokio::test]
async fn fixing_an_invalid_file_back_to_the_same_set_yields_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endpoints.json");
    write(&path, TWO);
    let mut source = File::new(&path).unwrap();
    next(&mut source).await.unwrap();
    write(&path, "[{\"addr\": \"10.0.0.1:80\"},");
    let e = next_error(&mut source).await;
    assert!(e.as_invalid_file().is_some(), "{e}");
    // The same set again: consumers learn the source is healthy again.
    write(&path, TWO);
    assert_eq!(
        next_reset_ids(&mut source).await,
        ["10.0.0.1:80", "10.0.0.2:80"]
    );
}

#[tokio::test]
async fn an_invalid_toml_edit_names_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endpoints.toml");
    write(&path, "[[endpoints]]\naddr = \"10.0.0.1:80\"\n");
    let mut source = File::new(&path).unwrap();
    assert_eq!(next_reset_ids(&mut source).await, ["10.0.0.1:80"]);

    write(
        &path,
        "[[endpoints]]\naddr = \"10.0.0.1:80\"\n\n[[endpoints]]\naddr = \"10.0.0.2\"\n",
    );
    let e = next_error(&mut source).await;
    let invalid = e.as_invalid_file().unwrap();
    assert_eq!(invalid.line(), Some(5), "{e}");
    assert_eq!(invalid.field(), Some("endpoints[1].addr"), "{e}");
}

#[tokio::test]
async fn deleting_the_file_keeps_the_last_good_set_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endpoints.json");
    write(&path, TWO);
    let mut guarded = File::new(&path).unwrap().guarded(&passthrough());
    let handle = guarded.handle();
    until(&mut guarded, |seen| seen.len() == 2).await;

    std::fs::remove_file(&path).unwrap();
    let e = next_error(&mut guarded).await;
    assert!(e.as_backend().is_some(), "{e}");
    assert!(e.to_string().contains("endpoints.json"), "{e}");
    assert_eq!(ids(&handle.endpoints()), ["10.0.0.1:80", "10.0.0.2:80"]);

    // Editors and ConfigMaps replace files by renaming one over them.
    let tmp = dir.path().join(".endpoints.json.tmp");
    write(&tmp, r#"[{"addr": "10.0.0.1:80"}]"#);
    std::fs::rename(&tmp, &path).unwrap();
    let seen = until(&mut guarded, |seen| {
        seen.iter().any(|i| matches!(i, Ok(Change::Remove(_))))
    })
    .await;
    assert!(seen.iter().all(|i| i.is_ok()), "{seen:?}");
    assert_eq!(ids(&handle.endpoints()), ["10.0.0.1:80"]);
}

#[tokio::test]
async fn a_reload_waits_for_the_debounce_and_coalesces_a_burst() {
    let debounce = Duration::from_millis(400);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("endpoints.json");
    write(&path, TWO);
    let mut source = File::builder(&path).debounce(debounce).build().unwrap();
    next(&mut source).await.unwrap();

    // Three writes in a burst: one reload, of the last.
    let written = Instant::now();
    write(&path, r#"[{"addr": "10.0.0.5:80"}]"#);
    write(&path, r#"[{"addr": "10.0.0.6:80"}]"#);
    write(&path, r#"[{"addr": "10.0.0.7:80"}]"#);
    let change = next(&mut source).await.unwrap();
    let elapsed = written.elapsed();
    assert_eq!(reset_ids(&change), ["10.0.0.7:80"]);
    assert!(elapsed >= debounce, "reloaded after {elapsed:?}");
    eprintln!("file reload observed {elapsed:?} after the write (debounce {debounce:?})");
}

#[tokio::test]
async fn a_lost_event_is_caught_by_the_rescan() {
    // A file outside the watched directory, reached through a symlink that is
    // edited in place: the directory watch sees nothing, the rescan does.
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("real.json");
    write(&target, r#"[{"addr": "10.0.0.1:80"}]"#);
    let path = dir.path().join("endpoints.json");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let mut source = File::builder(&path)
        .rescan_interval(Duration::from_millis(300))
        .debounce(Duration::ZERO)
        .build()
        .unwrap();
    assert_eq!(next_reset_ids(&mut source).await, ["10.0.0.1:80"]);
    write(&target, r#"[{"addr": "10.0.0.9:80"}]"#);
    assert_eq!(next_reset_ids(&mut source).await, ["10.0.0.9:80"]);
}

#[test]
fn the_format_comes_from_the_extension() {
    let e = File::new("endpoints.ini").unwrap_err();
    assert_eq!(e.field(), "format");
    assert!(File::new("a/b/endpoints.YML").is_ok());
    let e = File::builder("endpoints.json")
        .rescan_interval(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "rescan_interval");
}
