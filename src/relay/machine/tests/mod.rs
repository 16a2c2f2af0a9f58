//! I/O-free tests of the task lifecycle.

use super::*;
use serde_json::json;

mod agent;
mod exec;
mod finish;
mod hub;
mod outbox;
mod storage;
mod timeouts;

const SEC: Duration = Duration::from_secs(1);

fn settings() -> RelaySettings {
    RelaySettings {
        wake_configured: true,
        direct_execution: false,
        cancel_configured: true,
        max_pending: 1,
        wake_retry_delays: vec![5 * SEC, 15 * SEC, 30 * SEC],
        confirmation_timeout: 30 * SEC,
        progress_keepalive: 300 * SEC,
        readopt_window: 120 * SEC,
        task_timeout: 7200 * SEC,
        agent_exit_grace: 60 * SEC,
        finish_results: false,
    }
}

struct H {
    relay: Relay,
    now: Instant,
    persist_result: Result<(), String>,
}

impl H {
    fn new(recovered: Vec<TaskRecord>) -> H {
        H::with(settings(), recovered)
    }

    fn with(settings: RelaySettings, recovered: Vec<TaskRecord>) -> H {
        let mut h = H {
            relay: Relay::new(settings, recovered),
            now: Instant::now(),
            persist_result: Ok(()),
        };
        h.drain();
        h
    }

    /// Drain actions, answering every Persist with `persist_result` as the I/O shell does.
    fn drain(&mut self) -> Vec<RelayAction> {
        let mut out = vec![];
        while let Some(a) = self.relay.poll_action() {
            let persist = matches!(a, RelayAction::Persist(_));
            out.push(a);
            if persist {
                self.relay
                    .handle(RelayInput::Persisted(self.persist_result.clone()), self.now, 0);
            }
        }
        out
    }

    fn input(&mut self, input: RelayInput) -> Vec<RelayAction> {
        self.relay.handle(input, self.now, 0);
        self.drain()
    }

    fn frame(&mut self, frame: TaskFrame) -> Vec<RelayAction> {
        self.input(RelayInput::Frame(frame))
    }

    fn assign(&mut self, id: &str, generation: i64) -> Vec<RelayAction> {
        let frame = json!({"type":"task_assign","task_id":id,"description":format!("do {id}"),"generation":generation,"assigned_at":1000});
        self.frame(TaskFrame::Assign(frame.as_object().unwrap().clone()))
    }

    /// Advance to the next deadline and fire it.
    fn fire(&mut self) -> (Duration, Vec<RelayAction>) {
        let at = self.relay.poll_timeout().expect("a deadline");
        let waited = at.saturating_duration_since(self.now);
        self.now = self.now.max(at);
        self.relay.handle_timeout(self.now);
        (waited, self.drain())
    }

    fn result(&mut self, id: &str, v: Value) -> Vec<RelayAction> {
        let file = match v {
            Value::Object(m) => ResultFile::Object(m),
            other => ResultFile::Invalid(format!("not an object: {other}")),
        };
        self.input(RelayInput::Result {
            task_id: id.into(),
            file,
        })
    }

    /// The agent writes `{"status":"success"}` as task `id`'s result.
    fn succeed(&mut self, id: &str) -> Vec<RelayAction> {
        self.result(id, json!({"status":"success"}))
    }

    fn wake_end(&mut self, id: &str, attempt: u32, end: WakeEnd) -> Vec<RelayAction> {
        self.input(RelayInput::WakeFinished {
            task_id: id.into(),
            attempt,
            end,
        })
    }

    /// A fresh relay with its link up and task `id` assigned, woken and started.
    fn at_work(id: &str, generation: i64) -> H {
        let mut h = H::new(vec![]);
        h.working(id, generation);
        h
    }

    /// Link up, one task assigned, woken, started.
    fn working(&mut self, id: &str, generation: i64) {
        self.input(RelayInput::LinkUp);
        self.assign(id, generation);
        self.wake_end(id, 1, WakeEnd::Success);
        self.input(RelayInput::Started { task_id: id.into() });
    }
}

fn sends(actions: &[RelayAction]) -> Vec<Outbound> {
    actions
        .iter()
        .filter_map(|a| match a {
            RelayAction::Send(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

fn kinds(actions: &[RelayAction]) -> Vec<String> {
    actions
        .iter()
        .filter(|a| !matches!(a, RelayAction::Log(_)))
        .map(|a| match a {
            RelayAction::Send(f) => format!("send {}", f.kind()),
            RelayAction::Persist(r) => format!("persist {}", r.len()),
            RelayAction::Wake { attempt, .. } => format!("wake {attempt}"),
            RelayAction::Finish { .. } => "finish".into(),
            RelayAction::Kill { .. } => "kill".into(),
            RelayAction::RunCancelCommand { .. } => "cancel_command".into(),
            RelayAction::Track { .. } => "track".into(),
            RelayAction::Untrack { .. } => "untrack".into(),
            RelayAction::ClearFiles { .. } => "clear".into(),
            RelayAction::DiscardResult { .. } => "discard".into(),
            RelayAction::HoldLink { .. } => "hold_link".into(),
            RelayAction::ReleaseLink => "release_link".into(),
            RelayAction::ProbeStorage(r) => format!("probe {}", r.len()),
            RelayAction::Log(_) => unreachable!(),
        })
        .collect()
}

fn accepted(id: &str) -> Outbound {
    Outbound::TaskAccepted { task_id: id.into() }
}

fn failed(id: &str, reason: &str, generation: i64) -> Outbound {
    Outbound::TaskFailed {
        task_id: id.into(),
        reason: reason.into(),
        generation,
    }
}

/// The `task_complete` for [`H::succeed`]'s result.
/// The records of the last `Persist` among `actions`.
fn last_persist(actions: &[RelayAction]) -> Vec<TaskRecord> {
    actions
        .iter()
        .rev()
        .find_map(|a| match a {
            RelayAction::Persist(r) => Some(r.clone()),
            _ => None,
        })
        .expect("a persist")
}

fn succeeded(id: &str, generation: i64) -> Outbound {
    complete(id, generation, json!({"status":"success"}))
}

fn complete(id: &str, generation: i64, result: Value) -> Outbound {
    Outbound::TaskComplete {
        task_id: id.into(),
        generation,
        result: result.as_object().unwrap().clone(),
        tokens_used: None,
        verification_report: None,
        verification_history: None,
    }
}

fn record(id: &str, status: &str, generation: i64) -> TaskRecord {
    let mut r = TaskRecord::from_assign(
        json!({"task_id": id, "generation": generation})
            .as_object()
            .unwrap(),
        0,
    )
    .unwrap();
    r.status = status.into();
    r
}

fn events(actions: &[RelayAction]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            RelayAction::Log(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}
