//! The real hub's task classification (`complexity.ex`) and routing decision (`task_router.ex`),
//! free of I/O: the wire `complexity` object at submit time, the `routing_decision` at placement.
//!
//! Rules as in §11.1 of the protocol reference; keyword confidences are rounded to two decimals, vote shares are not.

use serde_json::{json, Value};

/// The tiers `complexity_tier` may name in `POST /api/tasks`.
pub const TIERS: [&str; 4] = ["trivial", "standard", "complex", "unknown"];

/// Keywords (case-insensitive substrings) that make a task `complex`.
const COMPLEX_WORDS: [&str; 8] = [
    "refactor",
    "architect",
    "migration",
    "redesign",
    "migrate",
    "security",
    "overhaul",
    "rewrite",
];

/// Keywords (case-insensitive substrings) that make a small task `trivial`.
const TRIVIAL_WORDS: [&str; 8] = [
    "fix typo",
    "update readme",
    "bump version",
    "rename",
    "typo",
    "format",
    "lint",
    "version bump",
];

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The counts a classification looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signals {
    /// Whitespace-separated words of the description.
    pub words: usize,
    /// `file_hints` entries.
    pub files: usize,
    /// `verification_steps` entries.
    pub steps: usize,
}

/// The inferred tier and confidence of a task (rules 1-4 of §11.1, first match wins).
pub fn infer(description: &str, files: usize, steps: usize) -> (&'static str, f64, Signals) {
    let words = description.split_whitespace().count();
    let signals = Signals { words, files, steps };
    let lower = description.to_lowercase();
    if description.trim().is_empty() && files == 0 && steps == 0 {
        return ("unknown", 0.0, signals);
    }
    if COMPLEX_WORDS.iter().any(|w| lower.contains(w)) {
        let bonus = [files > 3, steps > 3, words > 50].iter().filter(|b| **b).count();
        return ("complex", round2(0.7 + 0.1 * bonus as f64), signals);
    }
    if files <= 3 && steps <= 3 && TRIVIAL_WORDS.iter().any(|w| lower.contains(w)) {
        let confidence = if words < 10 { 0.9 } else { 0.75 };
        return ("trivial", confidence, signals);
    }
    let bucket = |n: usize, low: usize, high: usize| {
        if n < low {
            "trivial"
        } else if n <= high {
            "standard"
        } else {
            "complex"
        }
    };
    let votes = [bucket(words, 10, 50), bucket(files, 1, 3), bucket(steps, 1, 3)];
    let count = |tier: &str| votes.iter().filter(|v| **v == tier).count();
    let (t, s, c) = (count("trivial"), count("standard"), count("complex"));
    let winner = if t > s && t > c {
        "trivial"
    } else if c > s && c > t {
        "complex"
    } else {
        "standard"
    };
    // A trivial vote is raised to standard: only keywords make a task trivial.
    let tier = if winner == "trivial" { "standard" } else { winner };
    // Not rounded: the hub records 1/3 as 0.3333333333333333 (task_complete_with_verification).
    (tier, count(tier) as f64 / 3.0, signals)
}

/// The wire `complexity` object `{effective_tier, source, explicit_tier, inferred:{tier, confidence}}`
/// and the signals behind it. `explicit` must be one of [`TIERS`] (checked at submit).
pub fn classify(description: &str, files: usize, steps: usize, explicit: Option<&str>) -> (Value, Signals) {
    let (tier, confidence, signals) = infer(description, files, steps);
    let (effective, source) = match explicit {
        Some(e) => (e, "explicit"),
        None => (tier, "inferred"),
    };
    let complexity = json!({"effective_tier": effective, "source": source, "explicit_tier": explicit,
        "inferred": {"tier": tier, "confidence": confidence}});
    (complexity, signals)
}

/// A healthy LLM endpoint the router may pick: its id (`host:port`) and models.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The registry id, `host:port`.
    pub id: String,
    /// The models `/api/tags` listed (non-empty).
    pub first_model: String,
}

/// The routing decision as the hub stores it (the 8 wire keys plus `candidate_count`,
/// `decided_at` and `fallback_from_tier`), for a task classified as `complexity`.
pub fn decide(complexity: &Value, signals: Signals, candidates: &[Candidate], now_ms: u64) -> Value {
    let tier = complexity["effective_tier"].as_str().unwrap_or("standard");
    let source = complexity["source"].as_str().unwrap_or("inferred");
    let confidence = complexity["inferred"]["confidence"].as_f64().unwrap_or(0.0);
    let resolved = match tier {
        "trivial" | "complex" => tier,
        _ => "standard",
    };
    let reason = format!(
        "{source}:{tier} (confidence {confidence:.2}, word_count={}, files={})",
        signals.words, signals.files
    );
    let mut d = json!({"effective_tier": resolved, "fallback_used": false, "fallback_reason": null,
        "classification_reason": reason, "candidate_count": 0, "decided_at": now_ms,
        "fallback_from_tier": null, "selected_endpoint": null, "selected_model": null});
    match resolved {
        "trivial" => {
            d["target_type"] = json!("sidecar");
            d["estimated_cost_tier"] = json!("free");
        }
        "complex" => {
            d["target_type"] = json!("claude");
            d["selected_endpoint"] = json!("claude_api");
            d["selected_model"] = json!("claude");
            d["estimated_cost_tier"] = json!("api");
        }
        _ => {
            d["target_type"] = json!("ollama");
            d["estimated_cost_tier"] = json!("local");
            d["candidate_count"] = json!(candidates.len());
            match candidates.first() {
                Some(c) => {
                    d["selected_endpoint"] = json!(c.id);
                    d["selected_model"] = json!(c.first_model);
                }
                None => {
                    d["fallback_used"] = json!(true);
                    d["fallback_reason"] = json!("no_healthy_ollama_endpoints");
                    d["fallback_from_tier"] = json!("standard");
                    d["classification_reason"] = json!(format!(
                        "{source}:{tier} (confidence {confidence:.2}) [fallback from standard: no_healthy_ollama_endpoints]"
                    ));
                }
            }
        }
    }
    d
}

/// The decision as `task_assign` carries it: exactly the 8 wire keys.
pub fn wire_decision(stored: &Value) -> Value {
    let keys = [
        "effective_tier",
        "target_type",
        "selected_endpoint",
        "selected_model",
        "fallback_used",
        "fallback_reason",
        "classification_reason",
        "estimated_cost_tier",
    ];
    Value::Object(
        keys.iter()
            .map(|k| (k.to_string(), stored.get(*k).cloned().unwrap_or(Value::Null)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(desc: &str, files: usize, steps: usize) -> (&'static str, f64) {
        let (t, c, _) = infer(desc, files, steps);
        (t, c)
    }

    #[test]
    fn inference_follows_the_four_rules() {
        assert_eq!(tier("", 0, 0), ("unknown", 0.0));
        assert_eq!(tier("   ", 0, 0), ("unknown", 0.0));
        assert_eq!(tier("Redesign the whole scheduler", 0, 0), ("complex", 0.7));
        assert_eq!(tier("Refactor it", 4, 4), ("complex", 0.9));
        assert_eq!(tier(&"refactor ".repeat(51), 4, 4), ("complex", 1.0));
        assert_eq!(tier("fix typo in README", 0, 0), ("trivial", 0.9));
        assert_eq!(tier("rename the helper function", 0, 0), ("trivial", 0.9));
        assert_eq!(
            tier("rename the helper function and all of its many callers", 0, 0),
            ("trivial", 0.75)
        );
        // Too many hints for a trivial keyword: the vote decides.
        assert_eq!(tier("rename it", 4, 0), ("standard", 0.0));
        // Substring misfires, as on the real hub.
        assert_eq!(tier("Add information", 0, 0), ("trivial", 0.9));
        assert_eq!(tier("Describe the architecture", 0, 0), ("complex", 0.7));
        // The vote: a short ordinary task is standard with confidence 0.0, 0.33 with steps.
        assert_eq!(
            tier("Add a README section about routing", 0, 0),
            ("standard", 0.0)
        );
        assert_eq!(tier("Add a README section", 0, 2), ("standard", 1.0 / 3.0));
        assert_eq!(tier("Add a README section", 2, 2), ("standard", 2.0 / 3.0));
        assert_eq!(tier(&"word ".repeat(60), 5, 0), ("complex", 2.0 / 3.0));
        // One vote each: the tie goes to standard.
        assert_eq!(tier("Add a README section", 2, 5), ("standard", 1.0 / 3.0));
    }

    #[test]
    fn decisions_by_tier_and_the_fallback_texts() {
        let (c, s) = classify("fix typo in README", 0, 0, Some("trivial"));
        let d = decide(&c, s, &[], 1);
        assert_eq!(d["target_type"], "sidecar");
        assert_eq!(d["estimated_cost_tier"], "free");
        assert_eq!(
            d["classification_reason"],
            "explicit:trivial (confidence 0.90, word_count=4, files=0)"
        );
        let (c, s) = classify("Refactor the authentication module", 0, 0, None);
        let d = decide(&c, s, &[], 1);
        assert_eq!(
            (&d["target_type"], &d["selected_endpoint"], &d["selected_model"]),
            (&json!("claude"), &json!("claude_api"), &json!("claude"))
        );
        let (c, s) = classify("Summarise the open issues", 0, 0, Some("unknown"));
        assert_eq!(c["effective_tier"], "unknown");
        let d = decide(&c, s, &[], 1);
        assert_eq!(d["effective_tier"], "standard");
        assert_eq!(d["fallback_used"], true);
        assert_eq!(d["fallback_from_tier"], "standard");
        assert_eq!(
            d["classification_reason"],
            "explicit:unknown (confidence 0.00) [fallback from standard: no_healthy_ollama_endpoints]"
        );
        let up = [Candidate {
            id: "127.0.0.1:11434".into(),
            first_model: "qwen3:8b".into(),
        }];
        let d = decide(&c, s, &up, 1);
        assert_eq!(d["selected_endpoint"], "127.0.0.1:11434");
        assert_eq!(d["selected_model"], "qwen3:8b");
        assert_eq!(d["fallback_used"], false);
        assert_eq!(d["candidate_count"], 1);
        assert_eq!(
            d["classification_reason"],
            "explicit:unknown (confidence 0.00, word_count=4, files=0)"
        );
        let wire = wire_decision(&d);
        assert_eq!(wire.as_object().map(|o| o.len()), Some(8));
        assert!(wire.get("decided_at").is_none());
    }
}
