//! The checks shared by the fields: a required string, a duration, a whole number, a path; and
//! the [`Checker`] that makes their errors name the file and collects the warnings.

use std::path::Path;

use super::error::echo;
use super::error::example_line;
use super::schema::{suggest, Whole, KNOWN_KEYS};
use super::{ConfigError, ConfigErrorKind, MAX_DURATION_MS};

/// Checks the values of one config file, collecting warnings; its errors name the file.
pub(super) struct Checker<'a> {
    /// The config file, absolute.
    pub(super) path: &'a Path,
    /// The keys present in the file, each once (for "did you mean" on a missing required key).
    pub(super) keys: Vec<String>,
    pub(super) warnings: Vec<String>,
    /// Refuse a token file its group or others may read or write.
    pub(super) check_permissions: bool,
}

impl Checker<'_> {
    pub(super) fn err(&self, kind: ConfigErrorKind) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            kind,
        }
    }

    pub(super) fn warn(&mut self, msg: String) {
        self.warnings.push(format!("{}: {msg}", self.path.display()));
    }

    pub(super) fn invalid(&self, field: &str, message: String) -> ConfigError {
        self.err(ConfigErrorKind::Invalid {
            field: field.to_string(),
            message,
        })
    }

    /// A required, non-blank string of at most `max` characters, without control characters or
    /// surrounding spaces. The value is never echoed (it may be the token).
    pub(super) fn required_string(
        &self,
        key: &'static str,
        value: Option<String>,
        max: usize,
    ) -> Result<String, ConfigError> {
        let Some(s) = value else {
            // A typo of a required key is the likely cause: say so instead of "missing".
            if let Some(typo) = self
                .keys
                .iter()
                .find(|k| !KNOWN_KEYS.contains(&k.as_str()) && suggest(k) == Some(key))
            {
                return Err(self.invalid(
                    key,
                    format!(
                        "is missing, but there is a key `{}`\nhelp: did you mean `{key}`? rename the key",
                        echo(typo, None)
                    ),
                ));
            }
            return Err(self.err(ConfigErrorKind::Missing { field: key }));
        };
        if s.trim().is_empty() {
            return Err(self.err(ConfigErrorKind::Empty { field: key }));
        }
        let n = s.chars().count();
        if n > max {
            return Err(self.invalid(
                key,
                format!(
                    "is too long: {n} characters, the hub accepts at most {max}\n\
                     help: check that the value is complete and nothing was pasted into it twice"
                ),
            ));
        }
        if s.trim() != s {
            return Err(self.invalid(
                key,
                "has spaces or a line break at its start or end\nhelp: remove them; the hub compares the value exactly"
                    .to_string(),
            ));
        }
        if s.chars().any(char::is_control) {
            return Err(self.invalid(
                key,
                "holds a control character (a tab or line break?)\nhelp: remove it".to_string(),
            ));
        }
        Ok(s)
    }

    /// A duration in milliseconds: not negative, at most [`MAX_DURATION_MS`].
    pub(super) fn ms(&self, key: &'static str, value: Option<Whole>) -> Result<Option<u64>, ConfigError> {
        match value {
            None => Ok(None),
            Some(Whole::Count(ms)) if ms > MAX_DURATION_MS => Err(self.invalid(
                key,
                format!("is {ms} ms, more than the largest accepted, {MAX_DURATION_MS} ms (about 24.8 days)"),
            )),
            Some(Whole::Count(ms)) => Ok(Some(ms)),
            Some(Whole::Negative(n)) => Err(self.invalid(
                key,
                format!(
                    "is negative ({n})\nhelp: give a duration in milliseconds, for example:\n    {}",
                    example_line(key)
                ),
            )),
        }
    }

    /// A whole number that must not be negative.
    pub(super) fn uint(&self, key: &'static str, value: Option<Whole>) -> Result<Option<u64>, ConfigError> {
        match value {
            None => Ok(None),
            Some(Whole::Count(n)) => Ok(Some(n)),
            Some(Whole::Negative(n)) => Err(self.invalid(
                key,
                format!("is negative ({n})\nhelp: for example:\n    {}", example_line(key)),
            )),
        }
    }

    /// A duration in milliseconds that must be more than 0; `default` when absent.
    pub(super) fn positive_ms(
        &self,
        key: &'static str,
        value: Option<Whole>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        match self.ms(key, value)? {
            None => Ok(default),
            Some(0) => Err(self.invalid(
                key,
                format!("is 0, but it must be more than 0\nhelp: leave it out for the default, {default}"),
            )),
            Some(ms) => Ok(ms),
        }
    }
}
