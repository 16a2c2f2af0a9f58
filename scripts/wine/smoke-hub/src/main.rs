//! The crate's embedded hub on a fixed loopback port, for `run-windows-smoke.sh`: the sidecar
//! under wine connects to it with `run`, and `submit` puts tasks on it.
//!
//! Usage: `wine-smoke-hub PORT AGENT_ID TOKEN_FILE`: registers AGENT_ID with a new token, writes
//! the token to TOKEN_FILE, prints `ready` and each closed
//! connection, and serves until SIGINT or SIGTERM, then prints the hub's event history.

use agentcom_sidecar::hub::{EmbeddedHub, HubEvent, HubOptions};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, agent, token_file] = args.as_slice() else {
        eprintln!("usage: wine-smoke-hub PORT AGENT_ID TOKEN_FILE");
        std::process::exit(64);
    };
    let addr = format!("127.0.0.1:{port}")
        .parse()
        .expect("PORT is a port number");
    let hub = EmbeddedHub::start_on(addr, HubOptions::default())
        .await
        .expect("cannot listen on the port");
    std::fs::write(token_file, hub.add_token(agent)).expect("cannot write TOKEN_FILE");
    println!("ready {}", hub.url());
    // Each closed connection at once, with its close code (the script checks Ctrl+C's 1000).
    let mut events = hub.events();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event @ HubEvent::Closed { .. }) => println!("closed: {event:?}"),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    for event in hub.history() {
        println!("event: {event:?}");
    }
    for line in hub.hub_log() {
        println!("hub log: {line:?}");
    }
    hub.stop().await;
}
