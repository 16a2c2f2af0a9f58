//! The HTTP `CONNECT` proxy: its settings from the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
//! `ALL_PROXY`, `NO_PROXY`), the `NO_PROXY` matcher, and the tunnel request itself.

use super::errors::ConnectError;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The proxy settings: raw values as found in the environment, parsed when used.
///
/// `Debug` hides any credentials in the proxy URLs.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The proxy for `wss://` (`HTTPS_PROXY`, else `ALL_PROXY`): `http://[user:pass@]host:port`.
    pub https: Option<String>,
    /// The proxy for `ws://` (`HTTP_PROXY`, else `ALL_PROXY`).
    pub http: Option<String>,
    /// Hosts reached directly (`NO_PROXY`): a comma list of `*`, `host`, `.domain`, `domain`,
    /// IP addresses or CIDR ranges, each optionally with `:port`.
    pub no_proxy: Option<String>,
    /// The variable `https` was read from (`https_proxy`, `HTTPS_PROXY`, `all_proxy`,
    /// `ALL_PROXY`), named in messages; `None` is shown as `HTTPS_PROXY`.
    pub https_var: Option<&'static str>,
    /// The variable `http` was read from; `None` is shown as `HTTP_PROXY`.
    pub http_var: Option<&'static str>,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_deref().map(redact_credentials);
        f.debug_struct("ProxyConfig")
            .field("https", &redact(&self.https))
            .field("http", &redact(&self.http))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// `url` with any `user:pass@` replaced by `***@`, to show a proxy URL to a person.
pub fn redact_credentials(url: &str) -> String {
    match url.rfind('@') {
        Some(at) => {
            let start = url.find("://").map_or(0, |i| i + 3);
            format!("{}***@{}", &url[..start], &url[at + 1..])
        }
        None => url.to_owned(),
    }
}

impl ProxyConfig {
    /// The proxy settings in the process environment (see [`ProxyConfig::from_vars`]).
    pub fn from_env() -> ProxyConfig {
        ProxyConfig::from_vars(|name| std::env::var(name).ok())
    }

    /// The proxy settings from variables looked up with `get` (a pure function of it).
    ///
    /// For each setting the lowercase name wins over the uppercase one (as in curl); an empty
    /// value counts as unset. `ALL_PROXY`/`all_proxy` is the fallback for both schemes.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> ProxyConfig {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                let value = get(name)?.trim().to_owned();
                (!value.is_empty()).then_some((name, value))
            })
        };
        let all = first(["all_proxy", "ALL_PROXY"]);
        let https = first(["https_proxy", "HTTPS_PROXY"]).or_else(|| all.clone());
        let http = first(["http_proxy", "HTTP_PROXY"]).or(all);
        ProxyConfig {
            https_var: https.as_ref().map(|(name, _)| *name),
            http_var: http.as_ref().map(|(name, _)| *name),
            https: https.map(|(_, value)| value),
            http: http.map(|(_, value)| value),
            no_proxy: first(["no_proxy", "NO_PROXY"]).map(|(_, value)| value),
        }
    }

    /// The variable the proxy for `wss://` (`tls`) or `ws://` comes from, for messages.
    pub fn variable(&self, tls: bool) -> &'static str {
        if tls {
            self.https_var.unwrap_or("HTTPS_PROXY")
        } else {
            self.http_var.unwrap_or("HTTP_PROXY")
        }
    }

    /// [`ProxyConfig::from_vars`] over a map (for tests and tools).
    pub fn from_map(vars: &HashMap<String, String>) -> ProxyConfig {
        ProxyConfig::from_vars(|name| vars.get(name).cloned())
    }

    /// Whether every proxy URL set is one this sidecar can use.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            (self.variable(true), &self.https),
            (self.variable(false), &self.http),
        ] {
            if let Some(value) = value {
                ProxyEndpoint::parse(value).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The proxy to use for `host:port` (`tls` for `wss://`), or `None` to connect directly.
    pub fn proxy_for(&self, tls: bool, host: &str, port: u16) -> Result<Option<ProxyEndpoint>, String> {
        let name = self.variable(tls);
        let value = if tls { &self.https } else { &self.http };
        let Some(value) = value else { return Ok(None) };
        if let Some(list) = &self.no_proxy {
            if no_proxy_matches(list, host, port) {
                return Ok(None);
            }
        }
        let mut proxy = ProxyEndpoint::parse(value).map_err(|e| format!("{name}: {e}"))?;
        proxy.setting = format!("{name}={}", redact_credentials(value));
        proxy.variable = name;
        Ok(Some(proxy))
    }
}

/// An HTTP proxy that tunnels with `CONNECT`. `Debug` hides the credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// The proxy's host (an IPv6 address without brackets).
    pub host: String,
    /// The proxy's port (80 when the URL names none).
    pub port: u16,
    /// `user:password` for `Proxy-Authorization: Basic`, percent-decoded.
    credentials: Option<(String, String)>,
    /// Where it was set, for messages, without credentials: `HTTPS_PROXY=http://***@host:3128`.
    setting: String,
    /// The variable that set it (`HTTPS_PROXY`, `all_proxy`, ...).
    variable: &'static str,
}

impl fmt::Debug for ProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ProxyEndpoint {
    /// Parse `http://[user:pass@]host[:port][/]` (a URL without a scheme is taken as `http://`).
    /// Error messages never repeat the credentials.
    pub fn parse(url: &str) -> Result<ProxyEndpoint, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "the proxy scheme `{scheme}://` is not supported: only http:// proxies (HTTP CONNECT) are"
                ))
            }
            None => url,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!(
                "the proxy URL `{}` has a path: expected http://[user:pass@]host:port",
                redact_credentials(url)
            ));
        }
        let (credentials, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((percent_decode(user)?, percent_decode(pass)?)), hostport)
            }
            None => (None, rest),
        };
        let bad = || {
            format!(
                "cannot read the proxy URL `{}`: expected http://[user:pass@]host:port",
                redact_credentials(url)
            )
        };
        let (host, port) = split_host_port(hostport).ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(ProxyEndpoint {
            host: host.to_owned(),
            port: port.unwrap_or(80),
            credentials,
            setting: redact_credentials(url),
            variable: "the proxy URL",
        })
    }

    /// Whether the proxy URL carried credentials.
    pub fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// `host:port` (an IPv6 host in brackets): what to show a person, never the credentials.
    pub fn address(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// The variable that set it (`HTTPS_PROXY`, `all_proxy`, ...).
    pub fn variable(&self) -> &'static str {
        self.variable
    }

    /// The variable and URL it came from, credentials hidden: `HTTPS_PROXY=http://***@host:3128`.
    pub fn setting(&self) -> &str {
        &self.setting
    }
}

/// `host:port`, an IPv6 host in brackets (`[::1]:443`): for `CONNECT`, `Host:` and messages.
pub(super) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Split `host`, `host:port`, `[v6]` or `[v6]:port`; a bare IPv6 address has no port.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    if s.parse::<IpAddr>().is_ok() {
        return Some((s, None));
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((s, None)),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("the proxy credentials hold a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the proxy credentials are not UTF-8".to_owned())
}

/// Whether `host:port` is in the `NO_PROXY` list `list`.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            // A CIDR range (its '/' makes it unambiguous).
            if let Some((net, bits)) = entry.split_once('/') {
                return match (host_ip, net.parse::<IpAddr>(), bits.parse::<u8>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                    _ => false,
                };
            }
            let Some((name, entry_port)) = split_host_port(entry) else {
                return false;
            };
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            if let Ok(ip) = name.parse::<IpAddr>() {
                return host_ip == Some(ip);
            }
            let name = name
                .trim_start_matches('*')
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            !name.is_empty()
                && (host == name
                    || (host.len() > name.len()
                        && host.ends_with(&name)
                        && host.as_bytes()[host.len() - name.len() - 1] == b'.'))
        })
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The longest proxy answer head read before giving up.
const MAX_PROXY_HEAD: usize = 16 * 1024;

/// Why the proxy itself could not be reached, naming it and the variable that set it (not the
/// hub: the hub was never tried).
pub(super) fn unreachable_proxy(proxy: &ProxyEndpoint, e: &ConnectError) -> String {
    let what = match e {
        ConnectError::NameNotResolved { host, detail } => {
            format!("its host name `{host}` does not resolve ({detail})")
        }
        ConnectError::Refused { .. } => "connection refused".to_owned(),
        ConnectError::TimedOut => "the connection timed out".to_owned(),
        other => other.to_string(),
    };
    format!(
        "cannot reach the proxy {} set by {}: {what}; is the proxy running, and is {} right?",
        proxy.address(),
        proxy.setting,
        proxy.variable
    )
}

/// Ask the proxy for a tunnel to `authority` (`host:port`, IPv6 in brackets); on success the
/// stream is the tunnel.
pub(crate) async fn proxy_connect(
    stream: &mut TcpStream,
    proxy: &ProxyEndpoint,
    authority: &str,
) -> Result<(), ConnectError> {
    let fail = |reason: String| ConnectError::Proxy { reason };
    let at = format!("{}:{}", proxy.host, proxy.port);
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some((user, pass)) = &proxy.credentials {
        request.push_str("Proxy-Authorization: Basic ");
        request.push_str(&basic_credentials(user, pass));
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| fail(format!("cannot send CONNECT to the proxy {at}: {e}")))?;

    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    let end = loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| fail(format!("cannot read the proxy {at}'s answer to CONNECT: {e}")))?;
        if n == 0 {
            return Err(fail(format!(
                "the proxy {at} closed the connection without answering CONNECT"
            )));
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if head.len() > MAX_PROXY_HEAD {
            return Err(fail(format!(
                "the proxy {at}'s answer to CONNECT has no end within {MAX_PROXY_HEAD} bytes"
            )));
        }
    };
    let status = parse_status_line(&head[..end]).ok_or_else(|| {
        fail(format!(
            "the proxy {at} answered CONNECT with something that is not HTTP"
        ))
    })?;
    if !(200..300).contains(&status.0) {
        let hint = match status.0 {
            407 if proxy.has_credentials() => ": check the user and password in the proxy URL",
            407 => ": put the credentials in the proxy URL (http://user:pass@host:port)",
            _ => "",
        };
        return Err(fail(format!(
            "the proxy refused CONNECT: {} {}{hint}",
            status.0, status.1
        )));
    }
    if head.len() > end {
        // Nothing may come before we speak (TLS and the HTTP upgrade are client-first).
        return Err(fail(format!(
            "the proxy {at} sent {} unexpected bytes after its CONNECT answer",
            head.len() - end
        )));
    }
    Ok(())
}

/// `(code, reason)` from an HTTP answer head.
fn parse_status_line(head: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.split("\r\n").next()?;
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    let code = code.parse().ok()?;
    let reason = parts.next().unwrap_or("").trim().to_owned();
    Some((code, reason))
}

/// `user:pass` in base64 (RFC 4648, padded), for `Proxy-Authorization: Basic` (RFC 7617).
fn basic_credentials(user: &str, pass: &str) -> String {
    data_encoding::BASE64.encode(format!("{user}:{pass}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_match_rfc4648() {
        for (user, pass, want) in [
            ("", "", "Og=="),
            ("f", "", "Zjo="),
            ("fo", "o", "Zm86bw=="),
            ("alice", "s@cret", "YWxpY2U6c0BjcmV0"),
            ("Aladdin", "open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="),
        ] {
            assert_eq!(basic_credentials(user, pass), want, "{user}:{pass}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"),
            Some((407, "Proxy Authentication Required".to_owned()))
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 200\r\n\r\n"),
            Some((200, String::new()))
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n\r\n"), None);
    }
}
