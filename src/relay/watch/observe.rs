//! Reading the agent's files: their names, one file's state (checked with `fstat` first, never
//! a FIFO), what a result or progress file holds, and when a result counts as complete.

use super::{valid_task_id, ResultContent};
use serde_json::Value;
use std::hash::{Hash, Hasher};
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Progress files are tiny; anything larger than this is ignored.
const MAX_PROGRESS_BYTES: u64 = 1024 * 1024;

/// The three files of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum FileKind {
    Started,
    Result,
    Progress,
}

impl FileKind {
    pub(super) const ALL: [FileKind; 3] = [FileKind::Started, FileKind::Result, FileKind::Progress];

    pub(super) fn extension(self) -> &'static str {
        match self {
            FileKind::Started => "started",
            FileKind::Result => "json",
            FileKind::Progress => "progress",
        }
    }
}

/// `{id}.started|json|progress` -> (id, kind). Anything else (temp files, editor swap files,
/// sub-folders' names, bad ids) is `None`.
pub(super) fn parse_file_name(name: &str) -> Option<(&str, FileKind)> {
    let (id, ext) = name.rsplit_once('.')?;
    let kind = match ext {
        "started" => FileKind::Started,
        "json" => FileKind::Result,
        "progress" => FileKind::Progress,
        _ => return None,
    };
    valid_task_id(id).then_some((id, kind))
}

/// What a result file's bytes amount to.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Parsed {
    /// Blank, or a prefix of JSON: a write in progress.
    Incomplete,
    /// Report now.
    Complete(ResultContent),
    /// Report once unchanged for `settle` (a syntax error, or a bare number that may still grow).
    Settle(ResultContent),
}

/// Classifies a result file's bytes (a leading UTF-8 byte order mark is skipped).
fn classify_result(bytes: &[u8]) -> Parsed {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Parsed::Complete(ResultContent::Object(map)),
        Ok(Value::Number(_)) => {
            // `12` may be the first half of `123`: wait unless the writer already ended it.
            let kind = ResultContent::NotObject("number".into());
            if bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                Parsed::Complete(kind)
            } else {
                Parsed::Settle(kind)
            }
        }
        Ok(other) => Parsed::Complete(ResultContent::NotObject(json_kind(&other).into())),
        Err(e) if e.is_eof() => Parsed::Incomplete,
        Err(e) => Parsed::Settle(ResultContent::Invalid(e.to_string())),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A valid progress report: an object with an integer `progress` and an optional string `message`.
fn parse_progress(bytes: &[u8]) -> Option<(i64, Option<String>)> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let Value::Object(mut map) = serde_json::from_slice::<Value>(bytes).ok()? else {
        return None;
    };
    let progress = map.get("progress")?.as_i64()?;
    let message = match map.remove("message") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Some((progress, message))
}

/// Identifies one version of a file cheaply, so the fallback check skips unchanged files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct MetaKey {
    len: u64,
    modified: Option<SystemTime>,
    ino: u64,
    ctime_ns: i128,
}

impl MetaKey {
    pub(super) fn of(meta: &std::fs::Metadata) -> MetaKey {
        #[cfg(unix)]
        let (ino, ctime_ns) = {
            use std::os::unix::fs::MetadataExt;
            (
                meta.ino(),
                meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
            )
        };
        #[cfg(not(unix))]
        let (ino, ctime_ns) = (0, 0);
        MetaKey {
            len: meta.len(),
            modified: meta.modified().ok(),
            ino,
            ctime_ns,
        }
    }
}

/// Identifies the folder being watched (to notice it was deleted and re-created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DirIdent {
    #[cfg(unix)]
    dev_ino: (u64, u64),
}

pub(super) fn dir_ident(dir: &Path) -> Option<DirIdent> {
    let meta = std::fs::metadata(dir).ok().filter(|m| m.is_dir())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(DirIdent {
            dev_ino: (meta.dev(), meta.ino()),
        })
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some(DirIdent {})
    }
}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// One file to look at, on the blocking pool.
pub(super) struct Job {
    pub(super) id: String,
    pub(super) kind: FileKind,
    /// Skip reading if the file still has this metadata (the fallback check).
    pub(super) skip_if: Option<MetaKey>,
}

/// What was found.
pub(super) enum Observation {
    /// The metadata matched `skip_if`.
    Unchanged,
    /// No such file (or unreadable).
    Missing,
    /// Something that is not a regular file (what it is): never opened.
    NotRegular(&'static str),
    /// `.started` exists.
    Present,
    /// A result file, classified; `fp` identifies its content.
    Result { key: MetaKey, fp: u64, parsed: Parsed },
    /// A progress file: `None` if not (yet) a valid progress report.
    Progress {
        key: MetaKey,
        value: Option<(i64, Option<String>)>,
    },
}

pub(super) fn observe(dir: &Path, job: &Job, max_result_bytes: u64) -> Observation {
    let path = dir.join(format!("{}.{}", job.id, job.kind.extension()));
    // Never open what is not a regular file: `metadata` does not open it.
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => return Observation::NotRegular(crate::files::kind_name(&m.file_type())),
        Ok(_) if job.kind == FileKind::Started => return Observation::Present,
        Ok(_) => {}
        Err(_) => return Observation::Missing,
    }
    // O_NONBLOCK, then fstat: a file swapped for a FIFO since `metadata` cannot block us.
    let mut file = match crate::files::open_read(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return match std::fs::metadata(&path) {
                Ok(m) if !m.is_file() => Observation::NotRegular(crate::files::kind_name(&m.file_type())),
                _ => Observation::Missing,
            }
        }
        Err(_) => return Observation::Missing,
    };
    let Ok(meta) = file.metadata() else {
        return Observation::Missing;
    };
    let key = MetaKey::of(&meta);
    if job.skip_if == Some(key) {
        return Observation::Unchanged;
    }
    let limit = match job.kind {
        FileKind::Result => max_result_bytes,
        _ => MAX_PROGRESS_BYTES,
    };
    let too_large = |len: u64| {
        let mut h = std::hash::DefaultHasher::new();
        (len, key.modified, key.ino, key.ctime_ns).hash(&mut h);
        Observation::Result {
            key,
            fp: h.finish(),
            parsed: Parsed::Settle(ResultContent::TooLarge(len)),
        }
    };
    if meta.len() > limit {
        return match job.kind {
            FileKind::Result => too_large(meta.len()),
            _ => Observation::Progress { key, value: None },
        };
    }
    let mut bytes = Vec::with_capacity(meta.len().min(1 << 20) as usize + 1);
    if (&mut file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .is_err()
    {
        return Observation::Missing;
    }
    if bytes.len() as u64 > limit {
        // It grew while we read it.
        let len = file.metadata().map(|m| m.len()).unwrap_or(bytes.len() as u64);
        return match job.kind {
            FileKind::Result => too_large(len),
            _ => Observation::Progress { key, value: None },
        };
    }
    match job.kind {
        FileKind::Result => Observation::Result {
            key,
            fp: fingerprint(&bytes),
            parsed: classify_result(&bytes),
        },
        _ => Observation::Progress {
            key,
            value: parse_progress(&bytes),
        },
    }
}

/// A result waiting to be unchanged for `settle`.
pub(super) struct Pending {
    fp: u64,
    since: Instant,
}

/// What we know about one `{id}.json`.
#[derive(Default)]
pub(super) struct ResultState {
    /// The content last reported.
    pub(super) reported: Option<u64>,
    /// Content waiting to settle.
    pub(super) pending: Option<Pending>,
    /// The metadata of the version last read.
    pub(super) seen: Option<MetaKey>,
}

impl ResultState {
    /// Applies an observation; returns what to report, if anything.
    pub(super) fn apply(
        &mut self,
        obs: Observation,
        now: Instant,
        settle: Duration,
    ) -> Option<ResultContent> {
        match obs {
            Observation::Unchanged => None,
            Observation::Result { key, fp, parsed } => {
                self.seen = Some(key);
                match parsed {
                    Parsed::Incomplete => {
                        self.pending = None;
                        None
                    }
                    _ if self.reported == Some(fp) => {
                        self.pending = None;
                        None
                    }
                    Parsed::Complete(content) => {
                        self.pending = None;
                        self.reported = Some(fp);
                        Some(content)
                    }
                    Parsed::Settle(content) => match &self.pending {
                        Some(p) if p.fp == fp => {
                            if now.duration_since(p.since) >= settle {
                                self.pending = None;
                                self.reported = Some(fp);
                                Some(content)
                            } else {
                                None
                            }
                        }
                        _ => {
                            self.pending = Some(Pending { fp, since: now });
                            None
                        }
                    },
                }
            }
            _ => {
                self.pending = None;
                self.seen = None;
                None
            }
        }
    }

    pub(super) fn deadline(&self, settle: Duration) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.since + settle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(parse_file_name("t-1.json"), Some(("t-1", FileKind::Result)));
        assert_eq!(
            parse_file_name("a.b_c.started"),
            Some(("a.b_c", FileKind::Started))
        );
        assert_eq!(parse_file_name("x.progress"), Some(("x", FileKind::Progress)));
        for odd in [
            "x.json.tmp",
            ".json",
            "x.JSON",
            "x y.json",
            "x.txt",
            "discarded",
            "é.json",
            "x/y.json",
        ] {
            assert_eq!(parse_file_name(odd), None, "{odd}");
        }
        // A swap file's name is a valid id with a leading dot, but the extension is wrong.
        assert_eq!(parse_file_name(".x.json.swp"), None);
        let long = "a".repeat(128);
        assert!(parse_file_name(&format!("{long}.json")).is_some());
        assert!(parse_file_name(&format!("a{long}.json")).is_none());
    }

    #[test]
    fn classify() {
        assert!(matches!(
            classify_result(br#"{"status":"success"}"#),
            Parsed::Complete(ResultContent::Object(_))
        ));
        assert!(matches!(
            classify_result(b"\xEF\xBB\xBF{}"),
            Parsed::Complete(ResultContent::Object(_))
        ));
        for prefix in [
            &b""[..],
            b"  \n",
            b"{",
            br#"{"status":"succ"#,
            br#"{"a":"#,
            b"[1,",
            b"nu",
            b"tr",
        ] {
            assert_eq!(
                classify_result(prefix),
                Parsed::Incomplete,
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
        // A multi-byte character cut in half at the end is a prefix too.
        let e_acute = "é".as_bytes();
        let mut cut = br#"{"a":""#.to_vec();
        cut.push(e_acute[0]);
        assert_eq!(classify_result(&cut), Parsed::Incomplete);
        for (text, kind) in [
            ("null", "null"),
            ("[1]", "array"),
            ("\"x\"", "string"),
            ("true", "boolean"),
        ] {
            assert_eq!(
                classify_result(text.as_bytes()),
                Parsed::Complete(ResultContent::NotObject(kind.into()))
            );
        }
        assert_eq!(
            classify_result(b"12"),
            Parsed::Settle(ResultContent::NotObject("number".into()))
        );
        assert_eq!(
            classify_result(b"12\n"),
            Parsed::Complete(ResultContent::NotObject("number".into()))
        );
        for garbage in [&b"garbage"[..], b"{\"a\":1}}", b"{'a':1}", b"{\"a\":1} x"] {
            assert!(
                matches!(
                    classify_result(garbage),
                    Parsed::Settle(ResultContent::Invalid(_))
                ),
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn progress() {
        assert_eq!(parse_progress(br#"{"progress":5}"#), Some((5, None)));
        assert_eq!(
            parse_progress(br#"{"progress":50,"message":"half"}"#),
            Some((50, Some("half".into())))
        );
        assert_eq!(
            parse_progress(br#"{"progress":50,"message":7}"#),
            Some((50, None))
        );
        assert_eq!(parse_progress(br#"{"progress":5.5}"#), None);
        assert_eq!(parse_progress(br#"{"progress":"5"}"#), None);
        assert_eq!(parse_progress(br#"{"progress":5"#), None);
        assert_eq!(parse_progress(b"[5]"), None);
    }

    #[test]
    fn settle_state() {
        let settle = Duration::from_secs(2);
        let t0 = Instant::now();
        let key = MetaKey {
            len: 1,
            modified: None,
            ino: 0,
            ctime_ns: 0,
        };
        let invalid = |fp| Observation::Result {
            key,
            fp,
            parsed: Parsed::Settle(ResultContent::Invalid("x".into())),
        };
        let mut s = ResultState::default();
        assert_eq!(s.apply(invalid(1), t0, settle), None);
        assert_eq!(s.deadline(settle), Some(t0 + settle));
        assert_eq!(s.apply(invalid(1), t0 + Duration::from_secs(1), settle), None);
        // Changed: the clock starts again.
        assert_eq!(s.apply(invalid(2), t0 + Duration::from_secs(1), settle), None);
        assert_eq!(s.apply(invalid(2), t0 + Duration::from_secs(2), settle), None);
        assert_eq!(
            s.apply(invalid(2), t0 + Duration::from_secs(3), settle),
            Some(ResultContent::Invalid("x".into()))
        );
        assert_eq!(s.deadline(settle), None);
        // Reported once.
        assert_eq!(s.apply(invalid(2), t0 + Duration::from_secs(9), settle), None);
        assert_eq!(s.deadline(settle), None);
        // A complete result replaces it.
        let done = Observation::Result {
            key,
            fp: 3,
            parsed: Parsed::Complete(ResultContent::NotObject("null".into())),
        };
        assert_eq!(
            s.apply(done, t0, settle),
            Some(ResultContent::NotObject("null".into()))
        );
    }
}
