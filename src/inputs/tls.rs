//! TLS for the ingest endpoint: the acceptor, from the configured certificate and key. The
//! handshakes run in the server's connection tasks (`server`), bounded by a timeout and counted
//! against the connection cap, so a slow or silent client never holds up the accept loop.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Reads the server certificate chain and key (PEM) into an acceptor.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    crate::output::install_crypto_provider();
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("http.tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "http.tls_cert {}: no certificate in it",
            cert.display()
        ));
    }
    crate::config::warn_if_world_readable(key, "http.tls_key");
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("http.tls_key {}: {e}", key.display()))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("http.tls_cert and http.tls_key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
