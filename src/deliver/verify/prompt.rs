//! The corrective prompt of a verification retry (protocol §11.8, the text shape Node sends).

use super::report::{Report, Status};
use crate::exec::shell::tail_chars;

/// How much of a failed check's output the prompt quotes (its end, where failures print).
const CHECK_OUTPUT_CHARS: usize = 500;
/// How much of the previous attempt's output the prompt quotes (its beginning).
const PREVIOUS_OUTPUT_CHARS: usize = 1000;

/// The corrective prompt for retry `attempt` of `max` after `report`: the failed checks with the
/// end of their output, the passed ones to keep passing, the original task `description` and
/// the start of the `previous_output`, then the request to fix only the failures.
pub fn retry_prompt(
    attempt: u32,
    max: u32,
    report: &Report,
    description: &str,
    previous_output: &str,
) -> String {
    let mut text = format!(
        "VERIFICATION RETRY {attempt}/{max}: Your previous work failed verification checks.\n\n\
         FAILED CHECKS:\n"
    );
    let failed = |s: Status| matches!(s, Status::Fail | Status::Error | Status::Timeout);
    for c in report.checks.iter().filter(|c| failed(c.status)) {
        text.push_str(&format!(
            "- {} ({}): {}\n",
            c.kind,
            c.target,
            c.status.as_str().to_uppercase()
        ));
        let output = c.output.trim();
        if !output.is_empty() {
            let quoted = tail_chars(output, CHECK_OUTPUT_CHARS);
            let cut = if quoted.len() < output.len() { "..." } else { "" };
            text.push_str(&format!("  Output: {cut}{quoted}\n"));
        }
    }
    text.push_str("\nPASSED CHECKS (keep these passing):\n");
    let passed: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Pass)
        .collect();
    if passed.is_empty() {
        text.push_str("(none)\n");
    }
    for c in passed {
        text.push_str(&format!("- {} ({})\n", c.kind, c.target));
    }
    let skipped: Vec<_> = report
        .checks
        .iter()
        .filter(|c| c.status == Status::Skip)
        .collect();
    if !skipped.is_empty() {
        text.push_str("\nSKIPPED CHECKS (not run on this host; nothing to fix):\n");
        for c in skipped {
            text.push_str(&format!("- {} ({})\n", c.kind, c.target));
        }
    }
    text.push_str(&format!(
        "\nORIGINAL TASK:\n{description}\n\nYOUR PREVIOUS OUTPUT:\n"
    ));
    let count = previous_output.chars().count();
    if count > PREVIOUS_OUTPUT_CHARS {
        let head: String = previous_output.chars().take(PREVIOUS_OUTPUT_CHARS).collect();
        text.push_str(&format!(
            "{head}\n[... {} more characters cut]\n",
            count - PREVIOUS_OUTPUT_CHARS
        ));
    } else {
        text.push_str(previous_output);
        text.push('\n');
    }
    text.push_str(
        "\nPlease fix the issues that caused the failed checks above. Focus only on the failures \
         and keep the passing checks passing.",
    );
    text
}
