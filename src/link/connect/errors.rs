//! Why a connection failed, in words a person can act on: [`ConnectError`], and the
//! classification of WebSocket and rustls failures into it.

use rustls::CertificateError;
use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why a connection to the hub failed, classified for a person to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The hub's host name could not be resolved.
    NameNotResolved {
        /// The name.
        host: String,
        /// What the resolver said.
        detail: String,
    },
    /// Nothing listens at the address (TCP RST).
    Refused {
        /// The address tried last.
        addr: SocketAddr,
    },
    /// The TCP connection timed out.
    TimedOut,
    /// The TLS handshake failed, or TLS could not be set up.
    Tls {
        /// Why, in words.
        reason: String,
    },
    /// The proxy could not be used or refused the tunnel.
    Proxy {
        /// Why, in words.
        reason: String,
    },
    /// The server answered the WebSocket upgrade with an HTTP status.
    HttpStatus {
        /// The HTTP status code.
        status: u16,
    },
    /// Any other I/O or protocol failure.
    Io(String),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::NameNotResolved { host, detail } => write!(
                f,
                "cannot resolve the host name `{host}` ({detail}): check the host in hub_url and this machine's DNS"
            ),
            ConnectError::Refused { addr } => write!(
                f,
                "connection refused by {addr}: is the hub running, and is the port in hub_url right?"
            ),
            ConnectError::TimedOut => write!(
                f,
                "the connection timed out: check that the hub is reachable from here (firewall, VPN, proxy settings)"
            ),
            ConnectError::Tls { reason } => write!(f, "TLS failed: {reason}"),
            // Each reason names the variable the proxy came from.
            ConnectError::Proxy { reason } => f.write_str(reason),
            ConnectError::HttpStatus { status } => write!(
                f,
                "the server answered HTTP {status} instead of upgrading to a WebSocket: is hub_url's path right (usually /ws)?"
            ),
            ConnectError::Io(detail) => f.write_str(detail),
        }
    }
}

impl std::error::Error for ConnectError {}

pub(super) fn classify_ws_error(e: &tokio_tungstenite::tungstenite::Error) -> ConnectError {
    use tokio_tungstenite::tungstenite::error::TlsError;
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(response) => ConnectError::HttpStatus {
            status: response.status().as_u16(),
        },
        Error::Tls(TlsError::Rustls(inner)) => ConnectError::Tls {
            reason: describe_rustls(inner),
        },
        Error::Tls(TlsError::InvalidDnsName) => ConnectError::Tls {
            reason: "the host in hub_url is not a valid TLS server name".to_owned(),
        },
        Error::Io(io) => {
            if let Some(inner) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return ConnectError::Tls {
                    reason: describe_rustls(inner),
                };
            }
            match io.kind() {
                io::ErrorKind::ConnectionRefused => ConnectError::Io(format!(
                    "connection refused: is the hub running, and is the port in hub_url right? ({io})"
                )),
                io::ErrorKind::TimedOut => ConnectError::TimedOut,
                _ => ConnectError::Io(format!("the WebSocket handshake failed: {io}")),
            }
        }
        other => ConnectError::Io(format!("the WebSocket handshake failed: {other}")),
    }
}

/// A rustls failure in words, with what to do about it.
pub(crate) fn describe_rustls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => "the hub's certificate is not signed by a trusted CA: \
set ca_file to the PEM file of the CA that signed it"
                .to_owned(),
            CertificateError::NotValidForName => {
                "the hub's certificate is not valid for the host in hub_url: use the name on the certificate"
                    .to_owned()
            }
            CertificateError::NotValidForNameContext { expected, presented } => format!(
                "the hub's certificate is not valid for {} (it names {}): use one of those names in hub_url",
                expected.to_str(),
                presented
                    .iter()
                    .map(|name| plain_name(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the hub's certificate has expired (or this machine's clock is wrong): renew it on the hub"
                    .to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the hub's certificate is not valid yet: check this machine's clock".to_owned()
            }
            other => format!("the hub's certificate was rejected: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => {
            format!("the hub ended the TLS handshake with the alert {alert:?}")
        }
        other => other.to_string(),
    }
}

/// A certificate name as rustls reports it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`), as a
/// person writes it: `localhost`, `127.0.0.1`. Anything else is kept as it is.
fn plain_name(presented: &str) -> String {
    let inner = |prefix: &str| {
        presented
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(')'))
            .map(|inner| inner.trim_matches('"').to_owned())
    };
    inner("DnsName(")
        .or_else(|| inner("IpAddress("))
        .unwrap_or_else(|| presented.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_are_shown_plainly() {
        assert_eq!(plain_name("DnsName(\"localhost\")"), "localhost");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("IpAddress(::1)"), "::1");
        assert_eq!(plain_name("hub.example"), "hub.example");
    }
}
