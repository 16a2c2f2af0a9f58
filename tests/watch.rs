//! `relay::watch` against real files in a temp folder.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agentcom_sidecar::relay::watch::{FileEvent, ResultContent, ResultWatcher, WatchOptions};
use serde_json::json;
use support::TempDir;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{timeout, Instant};

/// A results folder not made yet (`.0`: the watcher makes it) in a fresh temp folder (`.1`,
/// held only to remove it on drop).
struct TempResults(PathBuf, #[allow(dead_code)] TempDir);

impl TempResults {
    fn new() -> TempResults {
        let dir = TempDir::new("watch");
        TempResults(dir.join("results"), dir)
    }
}

/// How long to wait for an event that must come.
const MUST: Duration = Duration::from_secs(5);

fn opts(dir: &Path) -> WatchOptions {
    WatchOptions {
        settle: Duration::from_millis(300),
        ..WatchOptions::new(dir)
    }
}

async fn next(rx: &mut UnboundedReceiver<FileEvent>) -> FileEvent {
    timeout(MUST, rx.recv())
        .await
        .expect("no event in time")
        .expect("channel closed")
}

/// Asserts nothing arrives within `within`.
async fn none(rx: &mut UnboundedReceiver<FileEvent>, within: Duration) {
    if let Ok(ev) = timeout(within, rx.recv()).await {
        panic!("unexpected event: {ev:?}");
    }
}

/// Writes `name` next to its final place, then renames it in (what careful agents do).
fn put(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn object(v: serde_json::Value) -> ResultContent {
    match v {
        serde_json::Value::Object(m) => ResultContent::Object(m),
        _ => panic!("not an object"),
    }
}

fn result(id: &str, content: ResultContent) -> FileEvent {
    FileEvent::Result {
        task_id: id.into(),
        content,
    }
}

#[tokio::test]
async fn rename_into_place_is_a_result() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    assert!(tmp.0.is_dir(), "start creates the folder");
    w.track("t1");
    put(&tmp.0, "t1.json", r#"{"status":"success","output":"done"}"#);
    assert_eq!(
        next(&mut rx).await,
        result("t1", object(json!({"status":"success","output":"done"})))
    );
    none(&mut rx, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn slow_write_in_place_is_reported_once_complete() {
    let tmp = TempResults::new();
    // settle (200 ms) is shorter than the writer's pauses: a prefix must never count as invalid.
    let (mut w, mut rx) = ResultWatcher::start(WatchOptions {
        settle: Duration::from_millis(200),
        ..opts(&tmp.0)
    })
    .unwrap();
    w.track("slow");
    let path = tmp.0.join("slow.json");
    let whole = r#"{"status":"success","output":"héllo wörld"}"#.as_bytes();
    // Cut inside the multi-byte 'é' too.
    let cut1 = whole.iter().position(|&b| b == 0xC3).unwrap() + 1;
    let chunks = [&whole[..cut1], &whole[cut1..cut1 + 6], &whole[cut1 + 6..]];
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            f.write_all(chunk).unwrap();
            f.flush().unwrap();
        }
    });
    let ev = next(&mut rx).await;
    assert_eq!(
        ev,
        result("slow", object(json!({"status":"success","output":"héllo wörld"})))
    );
    writer.await.unwrap();
    none(&mut rx, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn non_objects_are_not_object() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    for (i, (text, kind)) in [("null", "null"), ("[1]", "array"), ("\"x\"", "string")]
        .iter()
        .enumerate()
    {
        let id = format!("n{i}");
        w.track(&id);
        put(&tmp.0, &format!("{id}.json"), text);
        assert_eq!(
            next(&mut rx).await,
            result(&id, ResultContent::NotObject(kind.to_string()))
        );
    }
}

#[tokio::test]
async fn garbage_is_invalid_after_settle() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    w.track("g");
    let written = Instant::now();
    put(&tmp.0, "g.json", "this is not json");
    match next(&mut rx).await {
        FileEvent::Result {
            task_id,
            content: ResultContent::Invalid(msg),
        } => {
            assert_eq!(task_id, "g");
            assert!(msg.contains("expected"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        written.elapsed() >= Duration::from_millis(300),
        "reported before settle"
    );
    none(&mut rx, Duration::from_millis(500)).await;
    // Fixed by the agent: reported again, as an object.
    put(&tmp.0, "g.json", r#"{"status":"failed","reason":"oops"}"#);
    assert_eq!(
        next(&mut rx).await,
        result("g", object(json!({"status":"failed","reason":"oops"})))
    );
}

#[tokio::test]
async fn too_large_is_never_read() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(WatchOptions {
        max_result_bytes: 1000,
        ..opts(&tmp.0)
    })
    .unwrap();
    w.track("big");
    let body = format!(r#"{{"output":"{}"}}"#, "x".repeat(5000));
    put(&tmp.0, "big.json", &body);
    assert_eq!(
        next(&mut rx).await,
        result("big", ResultContent::TooLarge(body.len() as u64))
    );
    none(&mut rx, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn started_before_and_after_the_result() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    w.track("a");
    w.track("b");
    put(&tmp.0, "a.started", "");
    assert_eq!(next(&mut rx).await, FileEvent::Started { task_id: "a".into() });
    put(&tmp.0, "a.json", "{}");
    assert_eq!(next(&mut rx).await, result("a", object(json!({}))));

    put(&tmp.0, "b.json", "{}");
    assert_eq!(next(&mut rx).await, result("b", object(json!({}))));
    std::fs::write(tmp.0.join("b.started"), "pid 42").unwrap();
    assert_eq!(next(&mut rx).await, FileEvent::Started { task_id: "b".into() });
    // Once per tracking: touching it again says nothing.
    std::fs::write(tmp.0.join("b.started"), "again").unwrap();
    none(&mut rx, Duration::from_millis(300)).await;
    // rescan() reports what is there again.
    w.rescan("b");
    let mut got = vec![next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        got,
        vec![
            result("b", object(json!({}))),
            FileEvent::Started { task_id: "b".into() }
        ]
    );
}

#[tokio::test]
async fn progress_is_reported_when_it_changes() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    w.track("p");
    put(&tmp.0, "p.progress", r#"{"progress":10,"message":"reading"}"#);
    assert_eq!(
        next(&mut rx).await,
        FileEvent::Progress {
            task_id: "p".into(),
            progress: 10,
            message: Some("reading".into())
        }
    );
    put(&tmp.0, "p.progress", r#"{"progress":60}"#);
    assert_eq!(
        next(&mut rx).await,
        FileEvent::Progress {
            task_id: "p".into(),
            progress: 60,
            message: None
        }
    );
    // The same content rewritten (in place, too): nothing new.
    put(&tmp.0, "p.progress", r#"{"progress":60}"#);
    // Not a valid progress report: ignored.
    put(&tmp.0, "p.progress", r#"{"progress":"70%"}"#);
    put(&tmp.0, "p.progress", r#"{"progress":60}"#);
    std::fs::write(tmp.0.join("p.progress"), r#"{ "progress": 60 }"#).unwrap();
    none(&mut rx, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn untracked_ids_get_results_only() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    put(&tmp.0, "late.started", "");
    put(&tmp.0, "late.progress", r#"{"progress":1}"#);
    put(&tmp.0, "late.json", r#"{"status":"success"}"#);
    assert_eq!(
        next(&mut rx).await,
        result("late", object(json!({"status":"success"})))
    );
    none(&mut rx, Duration::from_millis(300)).await;

    // Untracking after a result: the same file is not reported again as a late one.
    w.track("done");
    put(&tmp.0, "done.json", r#"{"status":"success"}"#);
    assert_eq!(
        next(&mut rx).await,
        result("done", object(json!({"status":"success"})))
    );
    w.untrack("done");
    std::fs::write(tmp.0.join("done.progress"), r#"{"progress":1}"#).unwrap();
    none(&mut rx, Duration::from_millis(300)).await;
    // But a new result for it is.
    put(&tmp.0, "done.json", r#"{"status":"failed"}"#);
    assert_eq!(
        next(&mut rx).await,
        result("done", object(json!({"status":"failed"})))
    );
}

#[tokio::test]
async fn files_present_at_track_are_reported() {
    let tmp = TempResults::new();
    std::fs::create_dir_all(&tmp.0).unwrap();
    std::fs::write(tmp.0.join("old.started"), "").unwrap();
    std::fs::write(
        tmp.0.join("old.progress"),
        r#"{"progress":90,"message":"almost"}"#,
    )
    .unwrap();
    std::fs::write(tmp.0.join("old.json"), r#"{"status":"success"}"#).unwrap();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    none(&mut rx, Duration::from_millis(200)).await;
    w.track("old");
    let mut got = vec![next(&mut rx).await, next(&mut rx).await, next(&mut rx).await];
    got.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        got,
        vec![
            FileEvent::Progress {
                task_id: "old".into(),
                progress: 90,
                message: Some("almost".into())
            },
            result("old", object(json!({"status":"success"}))),
            FileEvent::Started {
                task_id: "old".into()
            },
        ]
    );
    // Tracking again does not repeat anything.
    w.track("old");
    none(&mut rx, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn folder_deleted_and_recreated() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    w.track("r1");
    std::fs::remove_dir_all(&tmp.0).unwrap();
    // Whoever re-creates it (us or someone else), results written there are seen.
    let deadline = Instant::now() + MUST;
    loop {
        let _ = std::fs::create_dir_all(&tmp.0);
        if std::fs::write(tmp.0.join("r1.json.tmp"), "{}").is_ok()
            && std::fs::rename(tmp.0.join("r1.json.tmp"), tmp.0.join("r1.json")).is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    assert_eq!(next(&mut rx).await, result("r1", object(json!({}))));
    // And file system events work again (faster than the fallback check).
    w.track("r2");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    put(&tmp.0, "r2.json", "{}");
    assert_eq!(next(&mut rx).await, result("r2", object(json!({}))));
    println!("after re-creation: {:?}", t.elapsed());
}

#[tokio::test]
async fn folder_deleted_while_idle_is_recreated() {
    let tmp = TempResults::new();
    let (_w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    std::fs::remove_dir_all(&tmp.0).unwrap();
    let deadline = Instant::now() + MUST;
    while !tmp.0.is_dir() {
        assert!(Instant::now() < deadline, "not re-created");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A late result in the new folder is still reported.
    tokio::time::sleep(Duration::from_millis(50)).await;
    put(&tmp.0, "x.json", "{}");
    assert_eq!(next(&mut rx).await, result("x", object(json!({}))));
}

#[tokio::test]
async fn odd_names_are_ignored() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    w.track("x");
    std::fs::write(tmp.0.join("x.json.tmp"), "{}").unwrap();
    std::fs::write(tmp.0.join(".x.json.swp"), "{}").unwrap();
    std::fs::write(tmp.0.join("x.JSON"), "{}").unwrap();
    std::fs::write(tmp.0.join("bad id.json"), "{}").unwrap();
    std::fs::create_dir_all(tmp.0.join("discarded")).unwrap();
    std::fs::write(tmp.0.join("discarded").join("x.json"), "{}").unwrap();
    std::fs::create_dir_all(tmp.0.join("d.json")).unwrap();
    none(&mut rx, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn a_replaced_result_is_reported_again() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    w.track("re");
    put(&tmp.0, "re.json", r#"{"n":1}"#);
    assert_eq!(next(&mut rx).await, result("re", object(json!({"n":1}))));
    put(&tmp.0, "re.json", r#"{"n":1}"#);
    none(&mut rx, Duration::from_millis(300)).await;
    put(&tmp.0, "re.json", r#"{"n":2}"#);
    assert_eq!(next(&mut rx).await, result("re", object(json!({"n":2}))));
}

#[tokio::test]
async fn dropping_the_watcher_closes_the_channel() {
    let tmp = TempResults::new();
    let (w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    drop(w);
    assert_eq!(timeout(MUST, rx.recv()).await.unwrap(), None);
}

/// Prints the rename -> event latency over 100 results: `cargo test --test watch -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn latency_rename_to_event() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(WatchOptions::new(&tmp.0)).unwrap();
    let mut samples = Vec::new();
    for i in 0..100 {
        let id = format!("lat{i}");
        w.track(&id);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let tmp_path = tmp.0.join(format!("{id}.json.tmp"));
        std::fs::write(&tmp_path, r#"{"status":"success","output":"ok"}"#).unwrap();
        let t = std::time::Instant::now();
        std::fs::rename(&tmp_path, tmp.0.join(format!("{id}.json"))).unwrap();
        let ev = next(&mut rx).await;
        samples.push(t.elapsed());
        assert!(matches!(ev, FileEvent::Result { ref task_id, .. } if *task_id == id));
        w.untrack(&id);
    }
    samples.sort();
    let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    println!(
        "rename -> Result over {} results: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        samples.len(),
        pct(50),
        pct(90),
        pct(99),
        samples[samples.len() - 1]
    );
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[cfg(unix)]
fn not_regular(id: &str, file: PathBuf) -> FileEvent {
    FileEvent::NotRegular {
        task_id: id.into(),
        file,
        kind: "a FIFO (named pipe)".into(),
    }
}

/// A FIFO under a result's name is reported once and never opened (opening it would block the
/// reader until a writer came); a real result renamed over it is then reported as usual, and
/// files of other tasks are read meanwhile.
#[cfg(unix)]
#[tokio::test]
async fn fifos_are_reported_once_and_never_block_reading() {
    let tmp = TempResults::new();
    let (mut w, mut rx) = ResultWatcher::start(opts(&tmp.0)).unwrap();
    w.track("held");
    w.track("other");
    mkfifo(&tmp.0.join("held.json"));
    assert_eq!(next(&mut rx).await, not_regular("held", tmp.0.join("held.json")));
    mkfifo(&tmp.0.join("held.progress"));
    assert_eq!(
        next(&mut rx).await,
        not_regular("held", tmp.0.join("held.progress"))
    );
    mkfifo(&tmp.0.join("stranger.json"));
    assert_eq!(
        next(&mut rx).await,
        not_regular("stranger", tmp.0.join("stranger.json"))
    );
    // The fallback check (every second) sees them again, but says nothing more.
    none(&mut rx, Duration::from_millis(1500)).await;
    put(&tmp.0, "other.json", r#"{"status":"success"}"#);
    assert_eq!(
        next(&mut rx).await,
        result("other", object(json!({"status":"success"})))
    );
    put(&tmp.0, "held.json", r#"{"status":"success"}"#);
    assert_eq!(
        next(&mut rx).await,
        result("held", object(json!({"status":"success"})))
    );
    // A device behind a symbolic link is not read either.
    std::os::unix::fs::symlink("/dev/zero", tmp.0.join("other.progress")).unwrap();
    assert_eq!(
        next(&mut rx).await,
        FileEvent::NotRegular {
            task_id: "other".into(),
            file: tmp.0.join("other.progress"),
            kind: "a character device".into(),
        }
    );
}
