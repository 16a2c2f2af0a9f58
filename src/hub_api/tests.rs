//! [`HubApi`] against a scripted loopback HTTP server: what goes on the wire, what comes back.

use super::*;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// One request the server saw: its head (request line and headers) and body.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: String,
}

/// A server answering each request with the next `(status, body)`; the last one repeats. A
/// status of 0 means: never answer.
async fn server(answers: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (status, body) = answers[n.min(answers.len() - 1)];
            n += 1;
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => data.extend_from_slice(&buf[..k]),
                }
            };
            let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            while data.len() < head_end + length {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => data.extend_from_slice(&buf[..k]),
                }
            }
            let body_in = String::from_utf8_lossy(&data[head_end..]).into_owned();
            record.lock().unwrap().push(Seen { head, body: body_in });
            if status == 0 {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(tcp);
                });
                continue;
            }
            let answer = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
        }
    });
    (url, seen)
}

fn api(url: &str) -> HubApi {
    HubApi::new(url, Some(Secret::new(TOKEN.to_owned())), None)
        .unwrap()
        .with_proxy(ProxyConfig::default())
}

#[tokio::test]
async fn submit_sends_the_task_with_the_bearer_and_reads_the_id() {
    let (url, seen) = server(vec![(
        201,
        r#"{"status":"queued","task_id":"task-1","priority":2,"created_at":1700000000000}"#,
    )])
    .await;
    let submitted = api(&url)
        .submit(&json!({"description": "say hi", "priority": "normal"}))
        .await
        .unwrap();
    assert_eq!(submitted.task_id, "task-1");
    assert_eq!(submitted.priority, Some(2));
    let seen = seen.lock().unwrap()[0].clone();
    assert!(
        seen.head.starts_with("POST /api/tasks HTTP/1.1\r\n"),
        "{}",
        seen.head
    );
    assert!(
        seen.head.contains(&format!("authorization: Bearer {TOKEN}\r\n")),
        "{}",
        seen.head
    );
    assert!(
        seen.head.contains("content-type: application/json\r\n"),
        "{}",
        seen.head
    );
    let body: Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body, json!({"description": "say hi", "priority": "normal"}));
}

#[tokio::test]
async fn register_sends_no_token_and_keeps_the_new_one_secret() {
    let (url, seen) = server(vec![(
        201,
        r#"{"agent_id":"gcu-x","default_repo":null,"hub_api_url":"http://127.0.0.1:4000","hub_ws_url":"ws://127.0.0.1:4000/ws","token":"ffffeeeeddddccccbbbbaaaa99998888"}"#,
    )])
    .await;
    let reg = api(&url).register("gcu-x").await.unwrap();
    assert_eq!(reg.token.expose(), "ffffeeeeddddccccbbbbaaaa99998888");
    assert_eq!(reg.hub_ws_url, "ws://127.0.0.1:4000/ws");
    assert_eq!(reg.default_repo, None);
    assert!(!format!("{reg:?}").contains("ffffeeee"), "Debug shows the token");
    let seen = seen.lock().unwrap()[0].clone();
    assert!(
        seen.head.starts_with("POST /api/onboard/register "),
        "{}",
        seen.head
    );
    assert!(
        !seen.head.to_ascii_lowercase().contains("authorization"),
        "{}",
        seen.head
    );
    assert_eq!(seen.body, r#"{"agent_id":"gcu-x"}"#);
}

#[tokio::test]
async fn a_409_quotes_the_hub_and_says_what_to_do() {
    let (url, _) = server(vec![(409, r#"{"error":"agent_id already registered"}"#)]).await;
    let e = api(&url).register("taken").await.unwrap_err();
    assert_eq!(e.status, Some(409));
    assert_eq!(e.hub_error(), Some("agent_id already registered"));
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "POST {url}/api/onboard/register: the hub answered 409: agent_id already registered"
        )),
        "{text}"
    );
    assert!(text.contains("--rejoin"), "{text}");
}

#[tokio::test]
async fn ids_are_encoded_in_paths_and_queries() {
    let (url, seen) = server(vec![(200, r#"{"tasks":[{"id":"a"}],"count":1}"#)]).await;
    let api = api(&url);
    let tasks = api
        .tasks(&[("status", "queued"), ("assigned_to", "a b/c")])
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1);
    let _ = api.revoke("../x y").await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen[0]
            .head
            .starts_with("GET /api/tasks?status=queued&assigned_to=a%20b%2Fc HTTP/1.1"),
        "{}",
        seen[0].head
    );
    assert!(
        seen[1]
            .head
            .starts_with("DELETE /admin/tokens/..%2Fx%20y HTTP/1.1"),
        "{}",
        seen[1].head
    );
}

#[tokio::test]
async fn an_echoed_token_is_redacted_from_errors() {
    let (url, _) = server(vec![(
        500,
        r#"{"error":"boom 0123456789abcdef0123456789abcdef"}"#,
    )])
    .await;
    let e = api(&url).task("t").await.unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(!text.contains(TOKEN), "{text}");
    assert!(text.contains("boom <redacted>"), "{text}");
    assert_eq!(e.exit_code(), crate::exit_code::UNAVAILABLE);
}

#[tokio::test]
async fn an_unreachable_hub_is_69_and_names_hub_api_url() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = api(&url).health().await.unwrap_err();
    assert_eq!(e.status, None);
    assert_eq!(e.exit_code(), crate::exit_code::UNAVAILABLE);
    assert!(e.to_string().contains("hub_api_url"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_hub_that_never_answers_is_given_up_on_at_the_timeout() {
    let (url, _) = server(vec![(0, "")]).await;
    let started = tokio::time::Instant::now();
    let e = api(&url)
        .with_timeout(Duration::from_secs(3))
        .task("t")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no answer within 3 s"), "{e}");
    assert!(started.elapsed() >= Duration::from_secs(3));
}

#[tokio::test]
async fn default_repo_reads_the_key_and_a_404_is_none() {
    let (url, _) = server(vec![
        (
            200,
            r#"{"configured":true,"default_repo":"https://git.example/r.git"}"#,
        ),
        (404, r#"{"error":"not_found"}"#),
    ])
    .await;
    let api = api(&url);
    assert_eq!(
        api.default_repo().await.unwrap().as_deref(),
        Some("https://git.example/r.git")
    );
    assert_eq!(api.default_repo().await.unwrap(), None);
}
