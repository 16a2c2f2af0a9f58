//! The Ollama executor against the fake Ollama, on loopback.

use super::*;
use crate::exec::direct::Routing;
use crate::exec::fake_ollama::{refused_url, Chat, FakeOllama};
use serde_json::Map;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Short waits between attempts, for the tests on the real clock.
const QUICK: Policy = Policy {
    backoff: [Duration::from_millis(10), Duration::from_millis(20)],
    connect_timeout: Duration::from_secs(10),
    max_output: MAX_OUTPUT,
};

fn job(endpoint: &str, description: &str, context: Value) -> Job {
    Job {
        task_id: "t1".into(),
        description: description.into(),
        context: context.as_object().cloned().unwrap_or_default(),
        metadata: json!({}),
        routing: Routing::default(),
        endpoint: Some(endpoint.to_owned()),
        model: Some("fake-model:latest".into()),
        workdir: PathBuf::from("."),
        timeout: Duration::from_secs(60),
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<ExecEvent>) -> Vec<ExecEvent> {
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    events
}

fn chats(fake: &FakeOllama) -> usize {
    fake.received()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/chat")
        .count()
}

#[tokio::test]
async fn an_answer_streams_its_tokens_and_counts() {
    let fake = FakeOllama::start().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = run(&job(&fake.url(), "Say hello", json!({})), &tx).await.unwrap();
    assert_eq!(out.output, "Hello from the fake model.");
    assert_eq!(out.model_used, "fake-model:latest");
    assert_eq!((out.tokens_in, out.tokens_out), (7, 5));
    let events = drain(&mut rx);
    let tokens: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::Token)
        .map(|e| e.text.as_str())
        .collect();
    assert_eq!(tokens, ["Hello", " from", " the", " fake", " model."]);
    assert!(events
        .iter()
        .all(|e| e.model.as_deref() == Some("fake-model:latest")));
}

#[tokio::test]
async fn the_request_carries_the_description_byte_for_byte() {
    let fake = FakeOllama::start().await.unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let description = "Fix \"it\"; $(touch /tmp/pwned) `id` && echo 'x' | tee >/dev/null\n\\n café 🎉 %s {}";
    let context = json!({"repo": "r", "success_criteria": ["tests pass"]});
    run(&job(&fake.url(), description, context), &tx).await.unwrap();
    run(&job(&fake.url(), "  ", json!({})), &tx).await.unwrap();
    let received = fake.received();
    assert_eq!(received.len(), 2);
    assert_eq!(
        (received[0].method.as_str(), received[0].path.as_str()),
        ("POST", "/api/chat")
    );
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(
        body,
        json!({"model": "fake-model:latest", "stream": true, "messages": [
            {"role": "system", "content":
                "You are a helpful coding assistant.\nRepository: r\nSuccess criteria:\n- tests pass"},
            {"role": "user", "content": description}]})
    );
    assert_eq!(
        body["messages"][1]["content"].as_str().unwrap().as_bytes(),
        description.as_bytes()
    );
    let body: Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "Complete this task."}])
    );
}

#[tokio::test]
async fn a_500_is_tried_again_and_the_second_attempt_answers() {
    let fake = FakeOllama::start().await.unwrap();
    fake.push_chat(Chat::Status {
        code: 500,
        body: r#"{"error":"out of memory"}"#.into(),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let out = run_with(&job(&fake.url(), "hi", json!({})), &tx, &QUICK)
        .await
        .unwrap();
    assert_eq!(out.output, "Hello from the fake model.");
    assert_eq!(chats(&fake), 2);
    let events = drain(&mut rx);
    let error = events.iter().find(|e| e.kind == EventKind::Error).unwrap();
    assert!(
        error
            .text
            .contains("attempt 1 of 3 failed: HTTP 500: {\"error\":\"out of memory\"}"),
        "{}",
        error.text
    );
    assert!(events
        .iter()
        .any(|e| e.kind == EventKind::Status && e.text.contains("attempt 2 of 3")));
}

#[tokio::test(start_paused = true)]
async fn refused_three_times_fails_naming_the_endpoint_after_1_s_and_2_s() {
    let url = refused_url().await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let started = tokio::time::Instant::now();
    let err = run(&job(&url, "hi", json!({})), &tx).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert!(err.0.starts_with(&format!("Ollama at {url} failed 3 attempts at POST /api/chat (model fake-model:latest); the last: could not connect: ")), "{err}");
    assert!(err.0.to_lowercase().contains("refused"), "{err}");
    let events = drain(&mut rx);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Error,
            EventKind::Status,
            EventKind::Error,
            EventKind::Status
        ]
    );
    assert!(
        events[2].text.contains("retrying in 2000 ms"),
        "{}",
        events[2].text
    );
}

#[tokio::test]
async fn an_error_line_fails_the_execution_and_says_what_arrived() {
    let fake = FakeOllama::start().await.unwrap();
    fake.push_chat(Chat::ErrorLine {
        tokens: vec!["par".into()],
        error: "model runner crashed".into(),
    });
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = run_with(&job(&fake.url(), "hi", json!({})), &tx, &QUICK)
        .await
        .unwrap_err();
    assert_eq!(
        err.0,
        format!("Ollama at {} reported an error (model fake-model:latest; 2 lines and 3 bytes of text had arrived): model runner crashed", fake.url())
    );
    assert_eq!(chats(&fake), 1, "a failed answer is not asked again");
}

#[tokio::test]
async fn a_stream_that_ends_before_done_fails() {
    let fake = FakeOllama::start().await.unwrap();
    fake.push_chat(Chat::Cut {
        tokens: vec!["half an".into(), " answer".into()],
    });
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = run_with(&job(&fake.url(), "hi", json!({})), &tx, &QUICK)
        .await
        .unwrap_err();
    assert_eq!(
        err.0,
        format!("Ollama at {} ended its answer before \"done\" (model fake-model:latest; 2 lines and 14 bytes of text had arrived)", fake.url())
    );
}

#[tokio::test]
async fn a_line_that_is_not_json_or_too_long_fails() {
    let fake = FakeOllama::start().await.unwrap();
    fake.push_chat(Chat::Raw {
        body: "{\"message\":{\"content\":\"ok\"},\"done\":false}\n<html>Bad Gateway</html>\n".into(),
    });
    fake.push_chat(Chat::Raw {
        body: "x".repeat(MAX_LINE + 10),
    });
    let (tx, _rx) = mpsc::unbounded_channel();
    let j = job(&fake.url(), "hi", json!({}));
    let err = run_with(&j, &tx, &QUICK).await.unwrap_err();
    assert!(
        err.0.starts_with(&format!(
            "Ollama at {} sent a line that is not JSON (",
            fake.url()
        )),
        "{err}"
    );
    assert!(
        err.0
            .ends_with("2 lines and 2 bytes of text had arrived): <html>Bad Gateway</html>"),
        "{err}"
    );
    let err = run_with(&j, &tx, &QUICK).await.unwrap_err();
    assert_eq!(
        err.0,
        format!(
            "Ollama at {} sent a line longer than {MAX_LINE} bytes (0 lines and 0 bytes of text had arrived)",
            fake.url()
        )
    );
}

#[tokio::test]
async fn a_404_is_not_tried_again() {
    let fake = FakeOllama::start().await.unwrap();
    fake.push_chat(Chat::Status {
        code: 404,
        body: format!(
            r#"{{"error":"model 'fake-model:latest' not found{}"}}"#,
            "x".repeat(600)
        ),
    });
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = run_with(&job(&fake.url(), "hi", json!({})), &tx, &QUICK)
        .await
        .unwrap_err();
    assert!(err.0.starts_with(&format!("Ollama at {} answered POST /api/chat (model fake-model:latest) with HTTP 404: {{\"error\":\"model 'fake-model:latest' not found", fake.url())), "{err}");
    assert!(err.0.len() < 700, "the body is cut to 500 characters");
    assert_eq!(chats(&fake), 1);
}

#[tokio::test]
async fn dropping_the_future_closes_a_hung_request() {
    let fake = FakeOllama::start().await.unwrap();
    fake.push_chat(Chat::Hang);
    let (tx, _rx) = mpsc::unbounded_channel();
    let j = job(&fake.url(), "hi", json!({}));
    let timed_out = tokio::time::timeout(Duration::from_millis(300), run(&j, &tx)).await;
    assert!(timed_out.is_err());
    tokio::time::timeout(Duration::from_secs(5), fake.wait_hangs_closed(1))
        .await
        .expect("the fake saw the connection closed");
    assert_eq!(chats(&fake), 1);
}

#[tokio::test]
async fn a_100_000_token_stream_keeps_a_bounded_output() {
    let fake = FakeOllama::start().await.unwrap();
    fake.push_chat(Chat::Numbered { count: 100_000 });
    let (tx, mut rx) = mpsc::unbounded_channel::<ExecEvent>();
    let counter = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(e) = rx.recv().await {
            if e.kind == EventKind::Token {
                n += 1;
            }
        }
        n
    });
    let out = run(&job(&fake.url(), "go on", json!({})), &tx).await.unwrap();
    drop(tx);
    assert_eq!(counter.await.unwrap(), 100_000);
    assert_eq!(out.tokens_out, 100_000);
    let text_len = 100_000 * "tok-00000000 ".len();
    let note = format!(
        "\n[output cut at {MAX_OUTPUT} bytes: {} more bytes not kept]",
        text_len - MAX_OUTPUT
    );
    assert!(
        out.output.ends_with(&note),
        "{}",
        &out.output[out.output.len() - 100..]
    );
    assert_eq!(out.output.len(), MAX_OUTPUT + note.len());
    assert!(out.output.starts_with("tok-00000000 tok-00000001 "));
}

#[tokio::test]
async fn probe_lists_the_models_and_vram_sums_them() {
    let fake = FakeOllama::start().await.unwrap();
    fake.set_models(&["a:latest", "b:7b"]);
    assert_eq!(probe(&fake.url()).await.unwrap(), ["a:latest", "b:7b"]);
    fake.set_vram(&[1000, 2345]);
    assert_eq!(vram_used(&fake.url()).await, Some(3345));
    fake.set_vram(&[]);
    assert_eq!(vram_used(&format!("{}/", fake.url())).await, Some(0));
    let refused = refused_url().await.unwrap();
    let err = probe(&refused).await.unwrap_err();
    assert!(
        err.starts_with(&format!("{refused}/api/tags: could not connect: ")),
        "{err}"
    );
    assert_eq!(vram_used(&refused).await, None);
}

#[tokio::test]
async fn probe_gives_up_after_3_s() {
    // A listener that accepts nothing answers nothing: the probe's deadline ends it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let err = probe(&url).await.unwrap_err();
    assert_eq!(err, format!("{url}/api/tags: no answer within 3 s"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn endpoints_become_base_urls_as_node_reads_them() {
    assert_eq!(endpoint_url("127.0.0.1:11434"), "http://127.0.0.1:11434");
    assert_eq!(endpoint_url("gpu-box"), "http://gpu-box:11434");
    assert_eq!(endpoint_url("http://gpu-box:8080/"), "http://gpu-box:8080");
    assert_eq!(endpoint_url("http://gpu-box"), "http://gpu-box:11434");
    assert_eq!(endpoint_url("[::1]:9000"), "http://[::1]:9000");
    assert_eq!(endpoint_url("[::1]"), "http://[::1]:11434");
}

#[test]
fn an_empty_context_sends_no_system_message() {
    let mut j = job("http://x:1", "d", json!({}));
    j.context = Map::new();
    assert_eq!(
        request_body(&j, "m"),
        json!({"model": "m", "messages": [{"role": "user", "content": "d"}], "stream": true})
    );
}
