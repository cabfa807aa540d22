//! TLS from the gateway to a database. `tls: "require"`: encrypted, the server not
//! authenticated (libpq's `sslmode=require`); handshake signatures are still checked.
//! `tls: "verify-full"`: the server's certificate must chain to the target's CA file and name
//! its host (libpq's `sslmode=verify-full`).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::BoxIo;
use crate::error::BackendError;
use crate::targets::{BackendTls, Target};

#[derive(Debug)]
struct AnyServer {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client configuration for TLS to databases that are not authenticated (`require`).
pub fn backend_tls_config() -> std::io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer { algorithms }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file, as trust anchors; an error a person can act on when the
/// file cannot be read or holds no usable certificate.
pub fn ca_roots(file: &str) -> Result<RootCertStore, BackendError> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| BackendError::TlsConfig(format!("cannot read the CA file {file}: {e}")))?;
    for cert in certs {
        let cert = cert
            .map_err(|e| BackendError::TlsConfig(format!("the CA file {file} is not PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            BackendError::TlsConfig(format!(
                "the CA file {file} holds a certificate that cannot be a CA: {e}"
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(BackendError::TlsConfig(format!(
            "the CA file {file} holds no certificate"
        )));
    }
    Ok(roots)
}

/// The client configuration for TLS to `target` (`require` or `verify-full`).
fn config_for(target: &Target) -> Result<Arc<ClientConfig>, BackendError> {
    match target.tls {
        BackendTls::VerifyFull => {
            let file = target.tls_ca_file.as_deref().ok_or_else(|| {
                BackendError::TlsConfig(format!(
                    "the target {} verifies TLS but names no CA file",
                    target.name
                ))
            })?;
            let roots = ca_roots(file)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| BackendError::TlsConfig(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        }
        _ => backend_tls_config().map_err(|e| BackendError::TlsConfig(e.to_string())),
    }
}

/// The TLS handshake with `target` over `io`, checking its certificate as the target says.
pub async fn connect(target: &Target, io: BoxIo) -> Result<BoxIo, BackendError> {
    let cfg = config_for(target)?;
    let name = ServerName::try_from(target.host.clone())
        .map_err(|e| BackendError::TlsConfig(format!("host name {}: {e}", target.host)))?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, io)
        .await
        .map_err(|source| BackendError::Tls {
            address: target.address(),
            source,
        })?;
    Ok(Box::new(tls))
}
