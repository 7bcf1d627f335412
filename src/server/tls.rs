//! The server's TLS: the certificate and key loaded into a rustls server
//! configuration, for STARTTLS (RFC 3207) and implicit TLS (RFC 8314);
//! the stream itself is [`crate::net::tls`].
//!
//! Only TLS 1.2 and 1.3 are spoken, with ring as the crypto provider: it
//! builds with nothing but a C compiler, so mailroom cross-compiles for
//! small boxes as easily as it builds here, and keeps the binary small.

use crate::config::TlsFiles;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// Reads the PEM certificate chain and key and builds the server side's
/// configuration. Errors name the file and what is wrong with it.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("tls: cannot read {}: {e}", path.display()))
    };
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert: {}: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls.cert: {}: no PEM certificate in the file",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| {
        format!(
            "tls.key: {}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
            files.key.display()
        )
    })?;
    let warning = super::cert::validity(&chain[0])
        .and_then(|v| super::cert::warning(&v, std::time::SystemTime::now()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "tls.key: {} is not the key of the certificate in {}",
                files.key.display(),
                files.cert.display()
            ),
            e => format!(
                "tls: {} and {}: {e}",
                files.cert.display(),
                files.key.display()
            ),
        })?;
    // Our order of cipher suites (the provider's, strongest first) wins
    // over the client's, as scanners expect of a server.
    config.ignore_client_order = true;
    // Resumption, so that clients that connect often (a relay, a phone)
    // skip the full handshake: TLS 1.3 and 1.2 tickets under a key that
    // rotates every 6 hours, and TLS 1.2 session IDs in a bounded cache.
    // A reload starts a new key, and old tickets just do not resume.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("tls: {e}"))?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    // Served all the same: a client doing opportunistic TLS may not check.
    if let Some(w) = warning {
        log::warn!("tls.cert: {}: {w}", files.cert.display());
    }
    Ok(Arc::new(config))
}
