//! TLS for `wss://`: the system's root certificates plus an optional `ca_file`, with rustls and
//! the ring provider.

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;

/// Add the certificates in the PEM file at `path` to `roots`; the error names the file.
pub(super) fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read ca_file {shown}: {e}"))?;
    let mut count = 0;
    for (index, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert =
            cert.map_err(|e| format!("ca_file {shown}: certificate {} is not valid PEM: {e}", index + 1))?;
        roots.add(cert).map_err(|e| {
            format!(
                "ca_file {shown}: certificate {} is not a usable CA certificate: {e}",
                index + 1
            )
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "ca_file {shown} holds no PEM certificate (expected one or more \
-----BEGIN CERTIFICATE----- blocks)"
        ));
    }
    Ok(())
}

/// The TLS settings: the system's roots plus `ca_file`, the ring provider.
pub(crate) fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        add_ca_file(&mut roots, path)?;
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates: the system has none that could be loaded; set ca_file".to_owned(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
