//! The executor runner: pacing, bounds, timeouts and stops, on tokio's paused clock.

use super::batch::MAX_PENDING_EVENTS;
use super::*;
use crate::exec::direct::{EventKind, Routing};
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Sets its flag when dropped: shows an execution's future was dropped.
struct OnDrop(Arc<AtomicBool>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn job(task_id: &str, timeout: Duration) -> Job {
    Job {
        task_id: task_id.into(),
        description: "d".into(),
        context: Default::default(),
        metadata: json!({}),
        routing: Routing::default(),
        endpoint: None,
        model: Some("m".into()),
        workdir: PathBuf::from("."),
        timeout,
    }
}

fn token(text: &str) -> ExecEvent {
    ExecEvent {
        kind: EventKind::Token,
        text: text.into(),
        model: Some("m".into()),
    }
}

/// An executor that streams `tokens`, one every `every`, then answers `end`.
fn streaming(tokens: Vec<&'static str>, every: Duration, end: Result<ExecOutput, ExecError>) -> ExecFn {
    Box::new(move |_job, events| {
        let tokens = tokens.clone();
        let end = end.clone();
        Box::pin(async move {
            for t in tokens {
                let _ = events.send(token(t));
                tokio::time::sleep(every).await;
            }
            end
        })
    })
}

/// What the runner says next, with the (paused) time it said it at.
async fn next(runner: &mut ExecutorRunner) -> (Duration, RelayInput, Instant) {
    let before = Instant::now();
    let input = tokio::time::timeout(Duration::from_secs(7200), runner.next_input())
        .await
        .expect("the runner said nothing");
    (before.elapsed(), input, Instant::now())
}

fn event(input: &RelayInput) -> &Value {
    match input {
        RelayInput::ExecutionEvent { event, .. } => event,
        other => panic!("expected an execution event, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_process_group_an_execution_announces_goes_to_the_relay() {
    let mut runner = ExecutorRunner::new();
    let exec: ExecFn = Box::new(|_job, _events| {
        Box::pin(async move {
            announce_group(4242);
            std::future::pending::<()>().await;
            Ok(ExecOutput::default())
        })
    });
    runner.start(&exec, job("t1", Duration::from_secs(60)));
    match next(&mut runner).await.1 {
        RelayInput::AgentGroup { task_id, group } => {
            assert_eq!(task_id, "t1");
            assert_eq!(group.pgid, 4242);
        }
        other => panic!("expected the group, got {other:?}"),
    }
    // Outside an execution, nothing is announced (and nothing fails).
    announce_group(4243);
}

#[tokio::test(start_paused = true)]
async fn the_first_token_goes_at_once_then_at_most_one_frame_per_100_ms() {
    let mut runner = ExecutorRunner::new();
    let out = ExecOutput {
        output: "abcdefghij".into(),
        model_used: "m".into(),
        tokens_in: 5,
        tokens_out: 10,
        ..ExecOutput::default()
    };
    // Ten tokens 30 ms apart (300 ms in all).
    let tokens = vec!["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let exec = streaming(tokens, Duration::from_millis(30), Ok(out));
    let start = Instant::now();
    runner.start(&exec, job("t1", Duration::from_secs(60)));
    let (_, first, at) = next(&mut runner).await;
    assert_eq!(at - start, Duration::ZERO, "the first token at once");
    assert_eq!(event(&first)["event_type"], "token");
    assert_eq!(event(&first)["text"], "a");
    assert_eq!(event(&first)["tokens_so_far"], 1);
    assert_eq!(event(&first)["model"], "m");
    let mut frames = vec![(at, first)];
    let end = loop {
        let (_, input, at) = next(&mut runner).await;
        match input {
            RelayInput::Executed { .. } => break input,
            other => frames.push((at, other)),
        }
    };
    for pair in frames.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= PROGRESS_INTERVAL,
            "frames {:?} apart",
            pair[1].0 - pair[0].0
        );
    }
    // Every token reached the hub, in order, coalesced.
    let text: String = frames
        .iter()
        .map(|(_, i)| event(i)["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "abcdefghij");
    assert!(frames.len() <= 5, "{} frames for 300 ms", frames.len());
    assert_eq!(event(&frames.last().unwrap().1)["tokens_so_far"], 10);
    match end {
        RelayInput::Executed {
            task_id,
            outcome: Ok(result),
        } => {
            assert_eq!(task_id, "t1");
            assert_eq!(result["status"], "success");
            assert_eq!(result["output"], "abcdefghij");
            assert_eq!(result["tokens_in"], 5);
            assert_eq!(result["execution_ms"], 300);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_long_stream_slows_down_within_the_hubs_rate_limit() {
    let mut runner = ExecutorRunner::new();
    // A token every 10 ms for 120 s.
    let exec: ExecFn = Box::new(|_job, events| {
        Box::pin(async move {
            for _ in 0..12_000 {
                let _ = events.send(token("x"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(ExecOutput::default())
        })
    });
    let start = Instant::now();
    runner.start(&exec, job("t1", Duration::from_secs(600)));
    let mut frames = Vec::new();
    let mut chars = 0;
    loop {
        let (_, input, at) = next(&mut runner).await;
        match input {
            RelayInput::Executed { .. } => break,
            RelayInput::ExecutionEvent { event, .. } => {
                chars += event["text"].as_str().unwrap().len();
                frames.push(at - start);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(chars, 12_000, "every token reached the hub");
    // The hub's bucket: 60 frames, one more a second. Never more than that in any window
    // starting at 0, with room to spare for pings and the outcome.
    for (i, at) in frames.iter().enumerate() {
        let allowed = 60.0 + at.as_secs_f64();
        assert!(((i + 1) as f64) < allowed * 0.8, "frame {} at {at:?}", i + 1);
    }
    // ... and still a steady stream: the burst at 100 ms, then one about every 1.5 s.
    assert!(frames.len() >= 30 + 60, "{} frames", frames.len());
    assert!(frames[29] <= Duration::from_secs(3), "{:?}", frames[29]);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_events_is_bounded() {
    let mut runner = ExecutorRunner::new();
    let exec: ExecFn = Box::new(|_job, events| {
        Box::pin(async move {
            // Alternating kinds cannot be coalesced: only the newest ones wait.
            for i in 0..1000 {
                let kind = if i % 2 == 0 {
                    EventKind::Stdout
                } else {
                    EventKind::Stderr
                };
                let _ = events.send(ExecEvent {
                    kind,
                    text: format!("{i}"),
                    model: None,
                });
            }
            std::future::pending::<()>().await;
            unreachable!()
        })
    });
    runner.start(&exec, job("t1", Duration::from_secs(60)));
    let (_, first, _) = next(&mut runner).await;
    assert_eq!(event(&first)["event_type"], "stdout");
    assert!(runner.running[0].batch.pending.len() <= MAX_PENDING_EVENTS);
    assert!(runner.running[0].batch.dropped > 0);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_drops_the_execution_and_fails_with_the_elapsed_time() {
    let mut runner = ExecutorRunner::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let exec: ExecFn = Box::new(move |_job, _events| {
        let guard = OnDrop(flag.clone());
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            unreachable!()
        })
    });
    runner.start(&exec, job("t1", Duration::from_secs(600)));
    let (waited, input, _) = next(&mut runner).await;
    assert_eq!(waited, Duration::from_secs(600));
    assert!(dropped.load(Ordering::SeqCst), "the execution was dropped");
    match input {
        RelayInput::Executed {
            outcome: Err(reason), ..
        } => assert_eq!(
            reason,
            "execution_timeout: the execution ran 10 min 0 s (the limit, 600000 ms, is \
             execution_timeout_ms or the tier's default); it was stopped"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn stop_drops_the_execution_and_nothing_more_is_said() {
    let mut runner = ExecutorRunner::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let exec: ExecFn = Box::new(move |_job, events| {
        let guard = OnDrop(flag.clone());
        Box::pin(async move {
            let _guard = guard;
            let _ = events.send(token("x"));
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(ExecOutput::default())
        })
    });
    runner.start(&exec, job("t1", Duration::from_secs(600)));
    let _ = next(&mut runner).await;
    assert!(runner.is_running("t1"));
    runner.stop("t1");
    assert!(dropped.load(Ordering::SeqCst), "stopping drops the execution");
    assert!(!runner.is_running("t1"));
    let quiet = tokio::time::timeout(Duration::from_secs(60), runner.next_input()).await;
    assert!(quiet.is_err(), "a stopped execution says nothing: {quiet:?}");
}

#[tokio::test(start_paused = true)]
async fn an_error_is_the_failure_reason_and_the_streamed_tail_goes_first() {
    let mut runner = ExecutorRunner::new();
    let long = "é".repeat(3000);
    let exec = streaming(
        vec!["a", "b"],
        Duration::from_millis(1),
        Err(ExecError(long.clone())),
    );
    runner.start(&exec, job("t1", Duration::from_secs(60)));
    let mut inputs = Vec::new();
    loop {
        let (_, input, _) = next(&mut runner).await;
        let end = matches!(input, RelayInput::Executed { .. });
        inputs.push(input);
        if end {
            break;
        }
    }
    let texts: String = inputs[..inputs.len() - 1]
        .iter()
        .map(|i| event(i)["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(texts, "ab", "the tail is sent before the end");
    match inputs.last().unwrap() {
        // The relay cuts it to 2000 characters (relay::machine::tests::exec).
        RelayInput::Executed {
            outcome: Err(reason), ..
        } => assert_eq!(reason, &long),
        other => panic!("{other:?}"),
    }
}
