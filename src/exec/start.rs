//! Carrying out a route ([`Runners::route`]): wake the agent, fail the task, probe an Ollama
//! first, or start a direct execution, verified and delivered (`pipeline::execute_verified`).

use super::direct::{Job, Routing, Target};
use super::executor::ExecFn;
use super::pipeline::{self, Verification};
use super::{RelayInput, Route, RunRequest, Runners, TaskRunner};
use crate::config::DirectExecution;
use crate::event_log::Event;
use std::time::Duration;

impl Runners {
    /// Start routed task `task` (attempt `attempt`) as `route` says.
    pub(super) fn start(&mut self, request: RunRequest, route: Route) -> Vec<RelayInput> {
        let RunRequest::Start { task, attempt } = &request else {
            return Vec::new();
        };
        let (task_id, attempt) = (task.task_id.clone(), *attempt);
        let chosen = |target: &str, endpoint: Option<String>, model: Option<String>, why: &str| {
            RelayInput::Log(Event::ExecutionChosen {
                task_id: task_id.clone(),
                target: target.to_owned(),
                endpoint,
                model,
                why: why.to_owned(),
            })
        };
        match route {
            Route::Wake { why } => {
                // A choice is logged when there was one: the hub routed the task and direct
                // execution is not off (the plain wake path logs as it always did).
                let routed = task.extra.get("routing_decision").is_some_and(|r| r.is_object());
                let mut inputs = Vec::new();
                if routed && self.choice.mode != DirectExecution::Off {
                    inputs.push(chosen("wake", None, None, &why));
                }
                inputs.extend(self.agent.handle(request));
                inputs
            }
            Route::Fail(reason) => vec![
                chosen("fail", None, None, &reason),
                RelayInput::Executed {
                    task_id: task_id.clone(),
                    outcome: Err(reason),
                },
            ],
            Route::Probe(url) => {
                let Some(direct) = &self.direct else {
                    return Vec::new();
                };
                self.probes.start(&direct.1, url, request);
                Vec::new()
            }
            Route::Execute(plan) => {
                let Some(direct) = self.direct.clone() else {
                    return Vec::new();
                };
                let target = plan.target;
                let run = move |job, events| {
                    let run: &ExecFn = match target {
                        Target::Ollama => &direct.0.ollama,
                        Target::Claude => &direct.0.claude,
                        Target::Shell => &direct.0.shell,
                    };
                    run(job, events)
                };
                let routing = Routing::from_task(&task.extra).unwrap_or_default();
                let timeout =
                    self.choice
                        .execution_timeout
                        .unwrap_or(match routing.effective_tier.as_deref() {
                            Some("trivial") => Duration::from_secs(600),
                            _ => Duration::from_secs(1800),
                        });
                let job = Job {
                    task_id: task_id.clone(),
                    description: task.description.clone(),
                    context: task.extra.clone(),
                    metadata: task.metadata.clone(),
                    routing,
                    endpoint: plan.endpoint.clone(),
                    model: plan.model.clone(),
                    workdir: self.workdir(task),
                    timeout,
                };
                // Corrective retries only where a model can act on the prompt (§11.8).
                let retries = match target {
                    Target::Ollama | Target::Claude => pipeline::retries_for(task),
                    Target::Shell => 0,
                };
                let (pipeline, task) = (self.pipeline.clone(), (*task).clone());
                self.executor
                    .start_with(task_id.clone(), timeout, move |events, logs| {
                        let verification = Verification {
                            pipeline,
                            task,
                            retries,
                            logs,
                        };
                        Box::pin(pipeline::execute_verified(run, job, events, verification))
                    });
                vec![
                    chosen(plan.target.as_str(), plan.endpoint, plan.model, &plan.why),
                    RelayInput::Executing {
                        task_id: task_id.clone(),
                        attempt,
                        executor: plan.target.as_str().to_owned(),
                    },
                ]
            }
        }
    }
}
