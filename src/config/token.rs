//! The hub token: where it comes from (`$AGENTCOM_TOKEN` > `token_file` > `token`), reading
//! `token_file`, and the checks of its length and characters. The token is kept in a [`Secret`]
//! and never appears in an error, a warning or `Debug` output.

use std::fmt;
use std::path::Path;

use super::check::Checker;
use super::error::shell_quote;
use super::load::{insecure_mode, read_limited};
use super::{ConfigError, ConfigErrorKind, LoadOptions, TOKEN_ENV};

/// Longest `token` the hub accepts (hub schema, protocol §2.4).
pub const MAX_TOKEN_CHARS: usize = 256;
/// Shortest token accepted. The hub issues 64 hex characters (protocol §7.1); a token under 16 is
/// no real secret, and could not be redacted from a panic message without garbling it (a token
/// `t` would be replaced inside every word holding a t).
pub const MIN_TOKEN_CHARS: usize = 16;

/// The largest token file read (a token is 64 characters).
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 << 10;

/// A secret string (the hub token). `Debug` and `Display` print `<redacted>`.
///
/// It deliberately does not implement `Serialize`: the only way to the value is [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The secret value itself, for the one place that must send it (the `identify` frame).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the hub token was read from. Precedence: `$AGENTCOM_TOKEN` > `token_file` > `token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The `AGENTCOM_TOKEN` environment variable.
    Environment,
    /// The file named by `token_file`.
    File,
    /// The `token` key of the config file.
    Config,
}

/// Finds the token: `$AGENTCOM_TOKEN` (from `opts`) > the file `token_file` > the key `token`
/// (`config_token`; `Err` is what it was instead of a string). When more than one is set, a
/// warning names the ones ignored. The length is checked later, by [`Checker::check_token_length`],
/// so that every other field's error comes first.
pub(super) fn find_token(
    b: &mut Checker<'_>,
    config_token: Option<Result<String, &'static str>>,
    token_file: Option<&Path>,
    opts: &LoadOptions,
) -> Result<(String, TokenSource), ConfigError> {
    let env_token = opts.env_token.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let config_token_present = config_token
        .as_ref()
        .is_some_and(|v| v.as_ref().map_or(true, |s| !s.trim().is_empty()));
    if let Some(t) = env_token {
        if let Err(message) = check_token(t) {
            return Err(b.err(ConfigErrorKind::EnvToken { message }));
        }
        let ignored = match (token_file.is_some(), config_token_present) {
            (true, true) => Some("`token_file` and `token` in the config are"),
            (true, false) => Some("`token_file` in the config is"),
            (false, true) => Some("`token` in the config is"),
            (false, false) => None,
        };
        if let Some(ignored) = ignored {
            b.warn(format!(
                "the token from the {TOKEN_ENV} environment variable is used; {ignored} ignored"
            ));
        }
        Ok((t.to_string(), TokenSource::Environment))
    } else if let Some(file) = token_file {
        let t = b.read_token_file(file)?;
        if config_token_present {
            b.warn(format!(
                "the token from `token_file` ({}) is used; `token` is ignored",
                file.display()
            ));
        }
        Ok((t, TokenSource::File))
    } else {
        let value = match config_token {
            Some(Err(found)) => {
                return Err(b.err(ConfigErrorKind::WrongType {
                    field: "token".to_string(),
                    expected: "a string",
                    found,
                }))
            }
            Some(Ok(s)) => Some(s),
            None => None,
        };
        Ok((
            b.required_string("token", value, MAX_TOKEN_CHARS)?,
            TokenSource::Config,
        ))
    }
}

impl Checker<'_> {
    /// Reads the token from `file` (the `token_file`), trimmed of surrounding whitespace. The
    /// file's content is never echoed.
    fn read_token_file(&self, file: &Path) -> Result<String, ConfigError> {
        let shown = shell_quote(&file.to_string_lossy());
        let fail = |message: String| self.invalid("token_file", message);
        if file.is_dir() {
            return Err(fail(format!(
                "names {shown}, which is a folder\nhelp: name the file that holds the token"
            )));
        }
        if let Some(kind) = crate::files::not_regular(file) {
            return Err(fail(format!(
                "names {shown}, which is {kind}, not a regular file\n\
                 help: name a regular file that holds the token alone (a FIFO or a device would block or never end)"
            )));
        }
        if self.check_permissions {
            if let Some(mode) = insecure_mode(file) {
                return Err(self.err(ConfigErrorKind::InsecurePermissions {
                    file: file.to_path_buf(),
                    mode,
                }));
            }
        }
        let text = match read_limited(file, MAX_TOKEN_FILE_BYTES) {
            Ok(t) => t,
            Err(e) => {
                return Err(fail(match e.kind() {
                    std::io::ErrorKind::FileTooLarge => format!(
                        "names {shown}, which holds more than {MAX_TOKEN_FILE_BYTES} bytes\n\
                         help: it must hold the token alone"
                    ),
                    std::io::ErrorKind::NotFound => format!(
                        "names {shown}, which does not exist\n\
                         help: create it holding only the token, readable only by you:\n\
                         \x20   (umask 077 && printf '%s\\n' 'THE_TOKEN' > {shown})\n\
                         help: a relative path is read from the config file's folder"
                    ),
                    std::io::ErrorKind::PermissionDenied => format!(
                        "names {shown}, which cannot be read: {e}\n\
                         help: it must be readable by the user running the sidecar; as its owner, run `chmod 600 {shown}`"
                    ),
                    std::io::ErrorKind::InvalidData => format!(
                        "names {shown}, which is not UTF-8 text\nhelp: it must hold the token alone, as text"
                    ),
                    _ => format!("names {shown}, which cannot be read: {e}"),
                }))
            }
        };
        let token = text.trim();
        if token.is_empty() {
            return Err(fail(format!(
                "names {shown}, which is empty\n\
                 help: write the token the hub issued for this agent_id into it \
                 (`mix agent_com.gen_token --agent-id ID` on the hub)"
            )));
        }
        if let Err(message) = check_token(token) {
            return Err(fail(format!("names {shown}, whose token {message}")));
        }
        Ok(token.to_string())
    }

    /// Refuses a token under [`MIN_TOKEN_CHARS`], naming where it came from.
    pub(super) fn check_token_length(
        &self,
        token: &str,
        source: TokenSource,
        file: Option<&Path>,
    ) -> Result<(), ConfigError> {
        let n = token.chars().count();
        if n >= MIN_TOKEN_CHARS {
            return Ok(());
        }
        let why = format!(
            "is {n} characters long, but a token must have at least {MIN_TOKEN_CHARS}: the hub issues \
             64 hex characters, and a shorter token could not be kept out of panic messages without \
             garbling them"
        );
        let help = "help: copy the whole token the hub issued for this agent_id \
                    (`mix agent_com.gen_token --agent-id ID` on the hub)";
        Err(match source {
            TokenSource::Environment => self.err(ConfigErrorKind::EnvToken {
                message: format!("holds a token that {why}\n{help}"),
            }),
            TokenSource::File => {
                let shown = shell_quote(&file.unwrap_or(Path::new("")).to_string_lossy());
                self.invalid("token_file", format!("names {shown}, whose token {why}\n{help}"))
            }
            TokenSource::Config => self.invalid("token", format!("{why}\n{help}")),
        })
    }
}

/// Checks a token read from `token_file` or the environment (already trimmed and non-empty);
/// on error returns a message that never holds the token.
fn check_token(token: &str) -> Result<(), String> {
    let n = token.chars().count();
    if n > MAX_TOKEN_CHARS {
        return Err(format!(
            "is too long: {n} characters, the hub accepts at most {MAX_TOKEN_CHARS}\n\
             help: it must hold the token alone"
        ));
    }
    if token.chars().any(char::is_control) {
        return Err(
            "holds a control character or a line break inside it\nhelp: it must hold the token alone, on one line"
                .to_string(),
        );
    }
    Ok(())
}
