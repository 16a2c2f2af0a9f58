//! The shape of `config.json`: its keys and their JSON types ([`RawConfig`], derived with serde),
//! the defaults, example lines for hints, and the warnings for keys this sidecar does not read
//! (the Node sidecar's, and typos with a "did you mean").
//!
//! Deserializing checks only types; a wrong one is an error whose path (`capabilities[2]`) comes
//! from `serde_path_to_error`. Values (ranges, blanks, relations between keys) are checked after,
//! in [`super`]. A JSON `null` is the same as an absent key.

use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::error::echo;
use super::ConfigErrorKind;

/// Default `log_max_bytes`: 10 MiB.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 10_485_760;
/// Default `log_keep`.
pub const DEFAULT_LOG_KEEP: u32 = 5;
/// `max_pending` when unset: well above the hub's worst burst (it assigns two or three tasks at
/// once); a pending task costs one entry in queue.json.
pub const DEFAULT_MAX_PENDING: usize = 16;

/// Longest duration accepted, in milliseconds: 2^31 - 1 (about 24.8 days).
///
/// Node's `setTimeout` fires at once for anything larger, so no working Node config had more, and
/// the bound keeps `Instant + Duration` far from overflowing anywhere in the sidecar.
pub const MAX_DURATION_MS: u64 = 2_147_483_647;

/// The defaults of the other keys (durations in milliseconds); the example lines in hints
/// (`error::example_line`) show the same.
pub(super) mod default {
    pub const CONFIRMATION_TIMEOUT_MS: u64 = 30_000;
    pub const HEARTBEAT_INTERVAL_MS: u64 = 30_000;
    pub const HEARTBEAT_TIMEOUT_MS: u64 = 10_000;
    pub const RECONNECT_INITIAL_MS: u64 = 1_000;
    pub const RECONNECT_MAX_MS: u64 = 60_000;
    pub const RECONNECT_JITTER: f64 = 0.5;
    pub const WAKE_TIMEOUT_MS: u64 = 60_000;
    pub const WAKE_RETRY_DELAYS_MS: [u64; 3] = [5_000, 15_000, 30_000];
    pub const PROGRESS_KEEPALIVE_MS: u64 = 300_000;
    pub const READOPT_WINDOW_MS: u64 = 120_000;
    pub const TASK_TIMEOUT_MS: u64 = 7_200_000;
    pub const AGENT_EXIT_GRACE_MS: u64 = 60_000;
    pub const RESULTS_DIR: &str = "./results";
    pub const LOG_FILE: &str = "./sidecar.log";
    pub const QUEUE_FILE: &str = "./queue.json";
}

/// The keys this sidecar reads (the fields of [`RawConfig`]).
pub(super) const KNOWN_KEYS: &[&str] = &[
    "agent_id",
    "token",
    "hub_url",
    "name",
    "capabilities",
    "wake_command",
    "confirmation_timeout_ms",
    "results_dir",
    "log_file",
    "heartbeat_interval_ms",
    "heartbeat_timeout_ms",
    "reconnect_initial_ms",
    "reconnect_max_ms",
    "reconnect_jitter",
    "queue_file",
    "cancel_command",
    "wake_timeout_ms",
    "wake_retry_delays_ms",
    "max_pending",
    "progress_keepalive_ms",
    "readopt_window_ms",
    "task_timeout_ms",
    "agent_exit_grace_ms",
    "token_file",
    "ca_file",
    "log_max_bytes",
    "log_keep",
    "report_resources",
    "direct_execution",
    "allow_hub_commands",
    "ollama_url",
    "ollama_model",
    "claude_command",
    "claude_model",
    "execution_timeout_ms",
    "repo_dir",
    "workspaces_dir",
    "hub_api_url",
    "gh_command",
    "reviewer",
];

/// Keys of the Node sidecar's config (protocol §6.5) that this sidecar accepts but does not use.
const NODE_ONLY_KEYS: &[&str] = &["log_level", "workspace"];

/// The known key an unknown key was probably meant to be: within edit distance 2 (optimal string
/// alignment, ignoring case), the same key without its `_ms` suffix, or `hub_ws_url` (the hub's
/// register reply).
pub(super) fn suggest(key: &str) -> Option<&'static str> {
    let lower = key.to_lowercase();
    if lower == "hub_ws_url" {
        return Some("hub_url");
    }
    if let Some(k) = KNOWN_KEYS.iter().find(|k| **k == format!("{lower}_ms")) {
        return Some(k);
    }
    KNOWN_KEYS
        .iter()
        .map(|k| (strsim::osa_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// The top-level object as (key, value) pairs in file order, duplicates kept.
pub(super) struct Pairs(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut v = Vec::new();
                while let Some(pair) = map.next_entry::<String, Value>()? {
                    v.push(pair);
                }
                Ok(Pairs(v))
            }
        }
        d.deserialize_map(V)
    }
}

impl Pairs {
    /// The keys, each once.
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        let mut seen = HashSet::new();
        self.0
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(move |k| seen.insert(*k))
    }

    /// The typed config. The last of duplicate keys is used; the first wrong type in file order
    /// is the error, with its path (`capabilities[2]`).
    pub(super) fn typed(&self) -> Result<RawConfig, ConfigErrorKind> {
        let mut seen = HashSet::new();
        let mut last: Vec<(&str, &Value)> = self
            .0
            .iter()
            .rev()
            .filter(|(k, _)| seen.insert(k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        last.reverse();
        let map = de::value::MapDeserializer::<_, serde_json::Error>::new(last.into_iter());
        serde_path_to_error::deserialize(map).map_err(type_error)
    }

    /// One warning per key that is used twice, belongs to the Node sidecar only, or is unknown
    /// (with a suggestion when it looks like a typo). `token` is kept out of them.
    pub(super) fn key_warnings(&self, token: Option<&str>) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut seen = HashSet::new();
        for (key, value) in &self.0 {
            let shown = echo(key, token);
            if !seen.insert(key.as_str()) {
                warnings.push(format!("`{shown}` appears more than once; the last one is used"));
                continue;
            }
            if KNOWN_KEYS.contains(&key.as_str()) {
                continue;
            }
            if NODE_ONLY_KEYS.contains(&key.as_str()) {
                // A Node setting left at its "off" value (null or "", as add-agent.js writes them)
                // changes nothing in Node either, so ignoring it loses nothing: no warning.
                let off = value.is_null() || value.as_str() == Some("");
                if !off {
                    warnings.push(format!(
                        "`{shown}` is a Node sidecar setting this sidecar does not use; it is ignored"
                    ));
                }
                continue;
            }
            warnings.push(match suggest(key) {
                Some(k) => format!("unknown key `{shown}` is ignored; did you mean `{k}`?"),
                None => format!("unknown key `{shown}` is ignored"),
            });
        }
        warnings
    }
}

/// `config.json` with each key's type checked; `None` is absent or null.
#[derive(serde::Deserialize)]
pub(super) struct RawConfig {
    #[serde(default, deserialize_with = "text")]
    pub agent_id: Option<String>,
    /// Not type-checked here: a `token` that `$AGENTCOM_TOKEN` or `token_file` overrides may be
    /// anything. `Err` holds what it was instead of a string ("a number").
    #[serde(default, deserialize_with = "maybe_text")]
    pub token: Option<Result<String, &'static str>>,
    #[serde(default, deserialize_with = "text")]
    pub token_file: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub hub_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub ca_file: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "strings")]
    pub capabilities: Option<Vec<String>>,
    #[serde(default, deserialize_with = "text")]
    pub wake_command: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub cancel_command: Option<String>,
    #[serde(default, deserialize_with = "millis")]
    pub confirmation_timeout_ms: Option<Whole>,
    #[serde(default, deserialize_with = "text")]
    pub results_dir: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub log_file: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub queue_file: Option<String>,
    #[serde(default, deserialize_with = "millis")]
    pub heartbeat_interval_ms: Option<Whole>,
    #[serde(default, deserialize_with = "millis")]
    pub heartbeat_timeout_ms: Option<Whole>,
    #[serde(default, deserialize_with = "millis")]
    pub reconnect_initial_ms: Option<Whole>,
    #[serde(default, deserialize_with = "millis")]
    pub reconnect_max_ms: Option<Whole>,
    #[serde(default, deserialize_with = "fraction")]
    pub reconnect_jitter: Option<serde_json::Number>,
    #[serde(default, deserialize_with = "millis")]
    pub wake_timeout_ms: Option<Whole>,
    #[serde(default, deserialize_with = "delays")]
    pub wake_retry_delays_ms: Option<Vec<u64>>,
    #[serde(default, deserialize_with = "pending")]
    pub max_pending: Option<usize>,
    #[serde(default, deserialize_with = "millis")]
    pub progress_keepalive_ms: Option<Whole>,
    #[serde(default, deserialize_with = "millis")]
    pub readopt_window_ms: Option<Whole>,
    #[serde(default, deserialize_with = "millis")]
    pub task_timeout_ms: Option<Whole>,
    #[serde(default, deserialize_with = "millis")]
    pub agent_exit_grace_ms: Option<Whole>,
    #[serde(default, deserialize_with = "bytes")]
    pub log_max_bytes: Option<Whole>,
    #[serde(default, deserialize_with = "keep_count")]
    pub log_keep: Option<Whole>,
    #[serde(default, deserialize_with = "flag")]
    pub report_resources: Option<bool>,
    #[serde(default, deserialize_with = "text")]
    pub direct_execution: Option<String>,
    #[serde(default, deserialize_with = "flag")]
    pub allow_hub_commands: Option<bool>,
    #[serde(default, deserialize_with = "text")]
    pub ollama_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub ollama_model: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub claude_command: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub claude_model: Option<String>,
    #[serde(default, deserialize_with = "millis")]
    pub execution_timeout_ms: Option<Whole>,
    #[serde(default, deserialize_with = "text")]
    pub repo_dir: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub workspaces_dir: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub hub_api_url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub gh_command: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub reviewer: Option<String>,
}

/// A whole number from the file. A negative one has the right type but a wrong value, reported
/// later, with the field's example.
#[derive(Debug, Clone, Copy)]
pub(super) enum Whole {
    /// Zero or more.
    Count(u64),
    /// Below zero.
    Negative(i64),
}

// What a field must be, in "field `x` must be ..., found ..." (the first table), and what a
// value can be found to be (the second). The message travels through serde's error as text.
const STRING: &str = "a string";
const STRINGS: &str = "an array of strings";
const MILLISECONDS: &str = "a whole number of milliseconds";
const BYTES: &str = "a whole number of bytes";
const KEEP_COUNT: &str = "a whole number from 1 to 100";
const FRACTION: &str = "a number from 0.0 to 1.0";
const DELAYS: &str = "an array of milliseconds, e.g. [5000, 15000, 30000]";
const PENDING: &str = "a whole number from 0 to 100";
const FLAG: &str = "true or false";
const EXPECTED: &[&str] = &[
    STRING,
    STRINGS,
    MILLISECONDS,
    BYTES,
    KEEP_COUNT,
    FRACTION,
    DELAYS,
    PENDING,
    FLAG,
];
const FOUND: &[&str] = &[
    "null",
    "a boolean",
    "a number",
    "a decimal number",
    "a string",
    "an array",
    "an object",
];

/// A type error from deserializing [`RawConfig`], as [`ConfigErrorKind::WrongType`] with its path.
fn type_error(e: serde_path_to_error::Error<serde_json::Error>) -> ConfigErrorKind {
    let field = e.path().to_string();
    let message = e.into_inner().to_string();
    let parts = message
        .strip_prefix("must be ")
        .and_then(|m| m.rsplit_once(", found "))
        .and_then(|(e, f)| {
            Some((
                *EXPECTED.iter().find(|x| **x == e)?,
                *FOUND.iter().find(|x| **x == f)?,
            ))
        });
    match parts {
        Some((expected, found)) => ConfigErrorKind::WrongType {
            field,
            expected,
            found,
        },
        // Not raised by this module's types (they raise only the above); kept whole.
        None => ConfigErrorKind::Invalid { field, message },
    }
}

/// One JSON value as a field's type sees it: an array's items are deserialized as `T`, so a bad
/// item's path (`capabilities[2]`) is known; an object's content is skipped.
enum Shape<T> {
    Null,
    Bool(bool),
    Unsigned(u64),
    Negative(i64),
    Decimal(f64),
    Text(String),
    Array(Vec<T>),
    Object,
}

impl<T> Shape<T> {
    /// What it is, for "found ...".
    fn found(&self) -> &'static str {
        match self {
            Shape::Null => "null",
            Shape::Bool(_) => "a boolean",
            Shape::Unsigned(_) | Shape::Negative(_) => "a number",
            Shape::Decimal(_) => "a decimal number",
            Shape::Text(_) => "a string",
            Shape::Array(_) => "an array",
            Shape::Object => "an object",
        }
    }

    /// The error "must be `expected`, found (what this is)".
    fn wrong<E: de::Error>(&self, expected: &'static str) -> E {
        E::custom(format_args!("must be {expected}, found {}", self.found()))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shape<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Shape<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Shape<T>, E> {
                Ok(Shape::Null)
            }
            fn visit_none<E>(self) -> Result<Shape<T>, E> {
                Ok(Shape::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Shape<T>, E> {
                Ok(Shape::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Shape<T>, E> {
                Ok(Shape::Unsigned(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Shape<T>, E> {
                Ok(u64::try_from(v).map_or(Shape::Negative(v), Shape::Unsigned))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Shape<T>, E> {
                Ok(Shape::Decimal(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Shape<T>, E> {
                Ok(Shape::Text(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Shape<T>, E> {
                Ok(Shape::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Shape::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Shape::Object)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A scalar field's value; `None` for null.
fn scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Shape<IgnoredAny>>, D::Error> {
    Option::<Shape<IgnoredAny>>::deserialize(d)
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match scalar(d)? {
        None => Ok(None),
        Some(Shape::Text(s)) => Ok(Some(s)),
        Some(other) => Err(other.wrong(STRING)),
    }
}

fn maybe_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Result<String, &'static str>>, D::Error> {
    Ok(scalar(d)?.map(|shape| match shape {
        Shape::Text(s) => Ok(s),
        other => Err(other.found()),
    }))
}

/// An item of `capabilities`.
struct Item(String);

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Shape::<IgnoredAny>::deserialize(d)? {
            Shape::Text(s) => Ok(Item(s)),
            other => Err(other.wrong(STRING)),
        }
    }
}

fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    match Option::<Shape<Item>>::deserialize(d)? {
        None => Ok(None),
        Some(Shape::Array(items)) => Ok(Some(items.into_iter().map(|i| i.0).collect())),
        Some(other) => Err(other.wrong(STRINGS)),
    }
}

fn whole<'de, D: Deserializer<'de>>(d: D, expected: &'static str) -> Result<Option<Whole>, D::Error> {
    match scalar(d)? {
        None => Ok(None),
        Some(Shape::Unsigned(n)) => Ok(Some(Whole::Count(n))),
        Some(Shape::Negative(n)) => Ok(Some(Whole::Negative(n))),
        Some(other) => Err(other.wrong(expected)),
    }
}

fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Whole>, D::Error> {
    whole(d, MILLISECONDS)
}

fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Whole>, D::Error> {
    whole(d, BYTES)
}

fn keep_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Whole>, D::Error> {
    whole(d, KEEP_COUNT)
}

fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Number>, D::Error> {
    match scalar(d)? {
        None => Ok(None),
        Some(Shape::Unsigned(n)) => Ok(Some(n.into())),
        Some(Shape::Negative(n)) => Ok(Some(n.into())),
        Some(Shape::Decimal(x)) => match serde_json::Number::from_f64(x) {
            Some(n) => Ok(Some(n)),
            None => Err(Shape::<IgnoredAny>::Decimal(x).wrong(FRACTION)),
        },
        Some(other) => Err(other.wrong(FRACTION)),
    }
}

/// An item of `wake_retry_delays_ms`: a whole number of milliseconds up to [`MAX_DURATION_MS`]
/// (anything else is "not a whole number of milliseconds").
struct Delay(u64);

impl<'de> Deserialize<'de> for Delay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Shape::<IgnoredAny>::deserialize(d)? {
            Shape::Unsigned(ms) if ms <= MAX_DURATION_MS => Ok(Delay(ms)),
            other => Err(other.wrong(MILLISECONDS)),
        }
    }
}

fn delays<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u64>>, D::Error> {
    match Option::<Shape<Delay>>::deserialize(d)? {
        None => Ok(None),
        Some(Shape::Array(items)) => Ok(Some(items.into_iter().map(|i| i.0).collect())),
        Some(other) => Err(other.wrong(DELAYS)),
    }
}

fn pending<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match scalar(d)? {
        None => Ok(None),
        Some(Shape::Unsigned(n)) if n <= 100 => Ok(Some(n as usize)),
        Some(other) => Err(other.wrong(PENDING)),
    }
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match scalar(d)? {
        None => Ok(None),
        Some(Shape::Bool(b)) => Ok(Some(b)),
        Some(other) => Err(other.wrong(FLAG)),
    }
}
