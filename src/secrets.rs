//! Keeping the hub token out of panic messages.
//!
//! The token is kept in a [`Secret`], whose `Debug` and `Display` print `<redacted>`, so it cannot
//! reach an error, a warning or the log through formatting. A panic message is the one output
//! this crate does not write itself: a panic in a dependency could quote a frame or a URL holding
//! it. [`install_redacting_panic_hook`] replaces the default hook with one that prints the same
//! report with the token replaced.

use crate::config::{Secret, MIN_TOKEN_CHARS};
use std::io::Write;

/// What the token is replaced with.
pub const REDACTED: &str = "<redacted>";

/// `text` with every occurrence of `secret` replaced by `<redacted>`. A secret under
/// [`MIN_TOKEN_CHARS`] leaves the text as it is: replacing it would garble the text (a token `t`
/// inside every word), and the sidecar refuses such a token at startup.
pub fn redact(text: &str, secret: &str) -> String {
    if secret.chars().count() < MIN_TOKEN_CHARS {
        text.to_owned()
    } else {
        text.replace(secret, REDACTED)
    }
}

/// Replaces the panic hook with one that prints what the default hook prints (the thread, the
/// location, the message and, with `RUST_BACKTRACE`, a backtrace) to stderr, with the token
/// replaced by `<redacted>`. The token is also the trimmed content of `token_file` when it came
/// from there, so that content is redacted too.
///
/// The release profile has `panic = "abort"`: the hook still runs, before the process aborts.
pub fn install_redacting_panic_hook(secret: &Secret) {
    let secret = secret.expose().to_owned();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            s
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.as_str()
        } else {
            "Box<dyn Any>"
        };
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let location = info
            .location()
            .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let mut report = format!("\nthread '{name}' panicked{location}:\n{message}\n");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            report.push_str(&format!("stack backtrace:\n{backtrace}\n"));
        } else {
            report
                .push_str("note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n");
        }
        // Nothing sensible is left to do if stderr is gone.
        let _ = std::io::stderr().write_all(redact(&report, &secret).as_bytes());
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const CHILD_ENV: &str = "AGENTCOM_SECRETS_PANIC_CHILD";

    #[test]
    fn redact_replaces_every_occurrence() {
        assert_eq!(
            redact(&format!("a {TOKEN} b {TOKEN}"), TOKEN),
            "a <redacted> b <redacted>"
        );
        assert_eq!(redact("nothing here", TOKEN), "nothing here");
        assert_eq!(redact("text", ""), "text");
    }

    #[test]
    fn redact_never_garbles_text_with_a_short_secret() {
        let text = "thread 'main' panicked at src/link/socket.rs: connect to http://hub failed";
        for short in ["t", "a", "at", "http", "0123456789abcde"] {
            assert_eq!(redact(text, short), text, "{short}");
        }
        // From 16 characters (the shortest token the sidecar accepts) it is replaced.
        let sixteen = "0123456789abcdef";
        assert_eq!(redact(&format!("x{sixteen}y"), sixteen), "x<redacted>y");
    }

    /// Run in a child process (this test binary again) so the hook does not replace the hook of
    /// the other tests and its output can be read.
    #[test]
    fn panic_messages_are_redacted() {
        if std::env::var_os(CHILD_ENV).is_some() {
            install_redacting_panic_hook(&Secret::new(TOKEN.to_owned()));
            let frame = format!(r#"{{"type":"identify","token":"{TOKEN}"}}"#);
            panic!("could not send {frame}");
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "secrets::tests::panic_messages_are_redacted",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, "1")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stderr.contains(r#"could not send {"type":"identify","token":"<redacted>"}"#),
            "{stderr}"
        );
        assert!(stderr.contains("panicked at src/secrets.rs:"), "{stderr}");
        assert!(!stderr.contains(TOKEN), "{stderr}");
        assert!(!stdout.contains(TOKEN), "{stdout}");
    }
}
