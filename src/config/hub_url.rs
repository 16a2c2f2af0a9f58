//! The checks of `hub_url`: a WebSocket URL (`ws://` or `wss://`) with a host, and a port that
//! can be one, with a fix written out for the usual mistakes (an `http://` URL, no scheme, no
//! `/ws` path).

use super::error::echo;

/// Checks a hub URL; on error returns the message that follows "field `hub_url` ".
pub(super) fn check_hub_url(url: &str, token: Option<&str>) -> Result<(), String> {
    const GOOD: &str =
        "help: write `ws://HOST:4000/ws`, or `wss://HOST/ws` when TLS is terminated in front of the hub";
    let shown = echo(url, token);
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "(`{shown}`) holds a space or a control character\n{GOOD}"
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "(`{shown}`) has no scheme\nhelp: write `ws://{}{}`",
            echo(url.trim_start_matches('/'), token),
            if url.contains('/') { "" } else { "/ws" }
        ));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "ws" | "wss" => {}
        s @ ("http" | "https") => {
            let ws = if s == "http" { "ws" } else { "wss" };
            let mut fixed = format!("{ws}://{rest}");
            if !rest.contains('/') || rest.ends_with(':') {
                fixed.push_str("/ws");
            } else if rest.ends_with('/') && rest.matches('/').count() == 1 {
                fixed.push_str("ws");
            }
            return Err(format!(
                "(`{shown}`) is an HTTP URL; the sidecar connects over WebSocket: use ws:// or wss://\nhelp: write `{}`",
                echo(&fixed, token)
            ));
        }
        _ => {
            return Err(format!(
                "(`{shown}`) has the scheme `{}`, but it must be ws:// or wss://\n{GOOD}",
                echo(scheme, token)
            ))
        }
    }
    if url.contains('#') {
        return Err(format!(
            "(`{shown}`) has a `#fragment`, which WebSocket URLs cannot have\n{GOOD}"
        ));
    }
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains('@') {
        // Not echoed: user info may hold a password.
        return Err(format!(
            "must not hold a user name or password (`user@`); the hub authenticates with `token`\n{GOOD}"
        ));
    }
    if !authority.starts_with('[') && authority.matches(':').count() > 1 {
        return Err(format!(
            "(`{shown}`) has an IPv6 address without brackets\nhelp: write it like `ws://[::1]:4000/ws`"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!(
                "(`{shown}`) has an IPv6 address without its closing `]`\n{GOOD}"
            ));
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!(
                "(`{shown}`) has `{}`, which is not an IPv6 address\nhelp: write it like `ws://[::1]:4000/ws`",
                echo(addr, token)
            ));
        }
        match after.strip_prefix(':') {
            Some(p) => (addr, Some(p)),
            None if after.is_empty() => (addr, None),
            None => {
                return Err(format!(
                    "(`{shown}`) has text after the IPv6 address's `]`\n{GOOD}"
                ))
            }
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("(`{shown}`) has no host\n{GOOD}"));
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(format!(
            "(`{shown}`) has `{}`, which is not a host name or address\n{GOOD}",
            echo(host, token)
        ));
    }
    if let Some(p) = port {
        if p.is_empty()
            || !p.chars().all(|c| c.is_ascii_digit())
            || !matches!(p.parse::<u32>(), Ok(1..=65535))
        {
            return Err(format!(
                "(`{shown}`): the port must be a number from 1 to 65535, as in `ws://HOST:4000/ws`"
            ));
        }
    }
    Ok(())
}

/// A warning when `url` (already checked) has no path: the hub serves WebSocket at `/ws`.
pub(super) fn no_path_warning(url: &str, token: Option<&str>) -> Option<String> {
    let after_scheme = &url[url.find("://").map_or(0, |i| i + 3)..];
    let rest = after_scheme.find(['/', '?']).map_or("", |i| &after_scheme[i..]);
    (rest.is_empty() || rest == "/").then(|| {
        format!(
            "`hub_url` `{}` has no path, but the AgentCom hub serves WebSocket at /ws; did you mean `{}/ws`?",
            echo(url, token),
            echo(url.trim_end_matches('/'), token)
        )
    })
}
