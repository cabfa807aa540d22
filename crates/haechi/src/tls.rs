//! TLS for the server and for Haechi's own clients (the CLI and `haechi agent`).
//!
//! The server serves a configured PEM certificate, or else a self-signed one that it generates
//! on the first start and keeps in `<data_dir>/tls/`, so that its SHA-256 fingerprint stays the
//! same across restarts and clients can pin it (CONTRACT §0). Both sides use the `ring` crypto
//! provider explicitly, never a process-wide default.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};
use sha2::{Digest, Sha256};

/// ALPN protocols the server offers, most preferred first.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration and the SHA-256 fingerprint of its certificate.
///
/// With `cfg_cert` and `cfg_key` (PEM files), serves them. With neither, serves
/// `<data_dir>/tls/cert.pem` and `key.pem`, generating a self-signed certificate there on the
/// first start (SANs `localhost`, `127.0.0.1`, `::1` and the machine's host name; the key file
/// is readable by its owner only) and reusing it afterwards.
pub fn server_config(
    cfg_cert: Option<&Path>,
    cfg_key: Option<&Path>,
    data_dir: &Path,
) -> Result<(Arc<ServerConfig>, String)> {
    let (cert_path, key_path) = match (cfg_cert, cfg_key) {
        (Some(cert), Some(key)) => (cert.to_path_buf(), key.to_path_buf()),
        (None, None) => ensure_self_signed(data_dir)?,
        (Some(cert), None) => bail!(
            "TLS certificate {} is configured without its private key: set tls_key too",
            cert.display()
        ),
        (None, Some(key)) => bail!(
            "TLS private key {} is configured without its certificate: set tls_cert too",
            key.display()
        ),
    };

    let chain = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let fingerprint = fingerprint(&chain[0]);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("the ring crypto provider supports no safe TLS version")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "cannot serve TLS certificate {} with private key {}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), fingerprint))
}

/// Where the generated self-signed certificate and its key live: `<data_dir>/tls/cert.pem`
/// and `<data_dir>/tls/key.pem`.
pub fn generated_cert_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The SHA-256 fingerprint of a DER certificate, as `openssl x509 -fingerprint -sha256`
/// prints it: upper-case hex pairs joined by `:`.
pub fn fingerprint(cert_der: &[u8]) -> String {
    colon_hex(&Sha256::digest(cert_der))
}

/// A fingerprint as a user may write it (with or without colons, any case, optionally
/// prefixed by `sha256:`, `sha256=` or openssl's `sha256 Fingerprint=`) in the canonical form
/// of [`fingerprint`]; `None` when it is not 32 bytes of hex.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    decode_fingerprint(s).map(|bytes| colon_hex(&bytes))
}

fn decode_fingerprint(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let hex: String = ["sha256 fingerprint=", "sha256:", "sha256="]
        .iter()
        .find_map(|prefix| lower.strip_prefix(prefix))
        .unwrap_or(&lower)
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(&hex, &mut bytes).ok()?;
    Some(bytes)
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How a Haechi client (the CLI, `haechi agent`) decides to trust the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pin {
    /// Trust exactly the certificate with this SHA-256 fingerprint (any form
    /// [`normalize_fingerprint`] accepts), whatever its names and dates, as `--server-fingerprint`
    /// does. This is how clients trust a server's generated self-signed certificate.
    Fingerprint(String),
    /// Trust a certificate with any of these fingerprints (an agent given several servers,
    /// each with its own self-signed certificate).
    AnyFingerprint(Vec<String>),
    /// Verify the server's certificate chain and name against the CA certificates in this PEM
    /// file (for a server with a certificate issued by an organisation's CA).
    Ca(PathBuf),
    /// Trust any certificate (`--insecure-skip-verify`): the connection is encrypted but the
    /// server is not authenticated. Handshake signatures are still checked.
    Insecure,
}

/// A client TLS configuration trusting the server as `pin` says. No ALPN protocol is set;
/// a caller that speaks HTTP/2 sets `alpn_protocols` on a clone.
pub fn client_config(pin: Pin) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the ring crypto provider supports no safe TLS version")?;
    let config = match pin {
        Pin::Fingerprint(pinned) => {
            return client_config(Pin::AnyFingerprint(vec![pinned]));
        }
        Pin::AnyFingerprint(pinned) => {
            let mut expected = Vec::with_capacity(pinned.len());
            for p in &pinned {
                expected.push(decode_fingerprint(p).ok_or_else(|| {
                    anyhow!(
                        "{p:?} is not a SHA-256 fingerprint: expected 64 hex digits, \
                         optionally in colon-separated pairs such as AB:CD:…"
                    )
                })?);
            }
            if expected.is_empty() {
                return Err(anyhow!("no fingerprint to pin"));
            }
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    expected: Some(expected),
                    algorithms,
                }))
                .with_no_client_auth()
        }
        Pin::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                expected: None,
                algorithms,
            }))
            .with_no_client_auth(),
        Pin::Ca(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(&path)? {
                roots.add(cert).with_context(|| {
                    format!(
                        "CA file {} holds a certificate that cannot be a trust anchor",
                        path.display()
                    )
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// The server presented a certificate other than the pinned one.
#[derive(Debug)]
pub struct FingerprintMismatch {
    /// The pinned fingerprint.
    pub expected: String,
    /// The fingerprint of the certificate the server presented.
    pub actual: String,
}

impl fmt::Display for FingerprintMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's certificate has SHA-256 fingerprint {}, not the pinned {}; if the \
             server's certificate was replaced on purpose, pin the new fingerprint",
            self.actual, self.expected
        )
    }
}

impl std::error::Error for FingerprintMismatch {}

/// Accepts the end-entity certificate with the pinned fingerprint (or, without a pin, any),
/// and checks handshake signatures against that certificate's key as usual.
#[derive(Debug)]
struct PinnedVerifier {
    /// Any of these; `None` trusts any certificate.
    expected: Option<Vec<[u8; 32]>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(expected) = &self.expected {
            let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
            if !expected.contains(&actual) {
                let mismatch = FingerprintMismatch {
                    expected: expected
                        .iter()
                        .map(|e| colon_hex(e))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    actual: colon_hex(&actual),
                };
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                    rustls::OtherError(Arc::new(mismatch)),
                )));
            }
        }
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

// ---- PEM files ----

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let file = File::open(path)
        .with_context(|| format!("cannot open TLS certificate file {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot read TLS certificate file {}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "TLS certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let file = File::open(path)
        .with_context(|| format!("cannot open TLS private key file {}", path.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .with_context(|| format!("cannot read TLS private key file {}", path.display()))?
        .ok_or_else(|| {
            anyhow!(
                "TLS private key file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                path.display()
            )
        })
}

// ---- the generated self-signed certificate ----

/// The generated certificate's paths, generating it first when there is none.
fn ensure_self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = generated_cert_paths(data_dir);
    let exists = |path: &Path| {
        path.try_exists()
            .with_context(|| format!("cannot check for {}", path.display()))
    };
    if exists(&cert)? {
        if !exists(&key)? {
            bail!(
                "the generated TLS certificate {} is there but its private key {} is missing: \
                 restore the key, or delete the certificate so that a new one is generated \
                 (clients that pinned the old fingerprint must then pin the new one)",
                cert.display(),
                key.display()
            );
        }
        warn_if_key_readable_by_others(&key);
        return Ok((cert, key));
    }

    let dir = cert.parent().expect("the certificate path has a parent");
    create_private_dir(dir)?;
    let (cert_pem, key_pem) = generate_self_signed()?;
    // The certificate is written last: its presence means both files are complete.
    write_atomically(&key, key_pem.as_bytes(), true)?;
    write_atomically(&cert, cert_pem.as_bytes(), false)?;
    tracing::info!(cert = %cert.display(), key = %key.display(), "generated a self-signed TLS certificate");
    Ok((cert, key))
}

fn generate_self_signed() -> Result<(String, String)> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let host = machine_hostname();
    if let Some(host) = &host {
        if !names.contains(host) {
            names.push(host.clone());
        }
    }
    let mut params = CertificateParams::new(names)
        .context("cannot build the self-signed certificate's names")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Haechi");
    dn.push(
        DnType::CommonName,
        format!(
            "Haechi self-signed ({})",
            host.as_deref().unwrap_or("localhost")
        ),
    );
    params.distinguished_name = dn;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    // RFC 5280 §4.1.2.5: 99991231235959Z means "no well-defined expiration date". Clients
    // pin this certificate by fingerprint, so it must not expire under them.
    params.not_after = rcgen::date_time_ymd(9999, 12, 31);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];

    let key = KeyPair::generate().context("cannot generate a TLS key pair")?;
    let cert = params
        .self_signed(&key)
        .context("cannot sign the self-signed TLS certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The machine's host name from `/etc/hostname` or `$HOSTNAME`, if it is a valid DNS name.
fn machine_hostname() -> Option<String> {
    let from_file = std::fs::read_to_string("/etc/hostname").ok();
    let from_env = std::env::var("HOSTNAME").ok();
    [from_file, from_env]
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_ascii_lowercase())
        .find(|h| is_dns_name(h))
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

/// Writes `path` through a temporary file and a rename, so that it is never half-written.
/// A `private` file is readable and writable by its owner only.
fn write_atomically(path: &Path, contents: &[u8], private: bool) -> Result<()> {
    let tmp = path.with_extension("pem.tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", tmp.display())),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let write = || -> std::io::Result<()> {
        let mut file = options.open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(unix)]
fn warn_if_key_readable_by_others(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(key) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                key = %key.display(),
                mode = format!("{mode:o}"),
                "the TLS private key is readable by other users; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_key_readable_by_others(_key: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn error<T>(result: Result<T>) -> String {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let (_, first) = server_config(None, None, &data_dir).unwrap();
        let (cert, key) = generated_cert_paths(&data_dir);
        assert!(cert.is_file() && key.is_file());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "key mode {mode:o}");
        }
        let der = &read_certs(&cert).unwrap()[0];
        assert_eq!(first, fingerprint(der));
        assert_eq!(
            normalize_fingerprint(&first).as_deref(),
            Some(first.as_str())
        );

        let (_, second) = server_config(None, None, &data_dir).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn generated_key_without_certificate_is_replaced_but_certificate_without_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generated_cert_paths(dir.path());
        std::fs::create_dir_all(cert.parent().unwrap()).unwrap();
        std::fs::write(&key, "stale").unwrap();
        server_config(None, None, dir.path()).unwrap();
        assert!(read_key(&key).is_ok());

        std::fs::remove_file(&key).unwrap();
        let msg = error(server_config(None, None, dir.path()));
        assert!(msg.contains(&key.display().to_string()), "{msg}");
    }

    #[test]
    fn configured_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let generated =
            rcgen::generate_simple_self_signed(vec!["haechi.example".to_string()]).unwrap();
        let cert = write(dir.path(), "cert.pem", &generated.cert.pem());
        let key = write(dir.path(), "key.pem", &generated.key_pair.serialize_pem());
        let data_dir = dir.path().join("data");
        let (config, fp) = server_config(Some(&cert), Some(&key), &data_dir).unwrap();
        assert_eq!(fp, fingerprint(generated.cert.der()));
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(
            !data_dir.exists(),
            "nothing is generated when a certificate is configured"
        );
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b.example".to_string()]).unwrap();
        let cert = write(dir.path(), "cert.pem", &generated.cert.pem());
        let key = write(dir.path(), "key.pem", &generated.key_pair.serialize_pem());
        let other_key = write(dir.path(), "other-key.pem", &other.key_pair.serialize_pem());
        let garbage = write(dir.path(), "garbage.pem", "this is not PEM\n");
        let missing = dir.path().join("missing.pem");

        for (c, k, named) in [
            (&missing, &key, &missing),
            (&cert, &missing, &missing),
            (&garbage, &key, &garbage),
            (&cert, &garbage, &garbage),
            (&key, &key, &key),
            (&cert, &other_key, &other_key),
        ] {
            let msg = error(server_config(Some(c), Some(k), dir.path()));
            assert!(msg.contains(&named.display().to_string()), "{msg}");
        }
        let msg = error(server_config(Some(&cert), None, dir.path()));
        assert!(msg.contains("tls_key"), "{msg}");
    }

    #[test]
    fn fingerprint_forms() {
        let canonical = fingerprint(b"certificate");
        let bare = canonical.replace(':', "");
        for form in [
            canonical.clone(),
            canonical.to_lowercase(),
            bare.clone(),
            bare.to_lowercase(),
            format!("sha256:{bare}"),
            format!("SHA256={canonical}"),
            format!("sha256 Fingerprint={canonical}"),
            format!("  {canonical}\n"),
        ] {
            assert_eq!(
                normalize_fingerprint(&form).as_deref(),
                Some(canonical.as_str()),
                "{form}"
            );
        }
        for bad in [
            "",
            "AB:CD",
            &bare[..62],
            &format!("{bare}00"),
            &bare.replace('A', "G"),
            "sha1:AB",
        ] {
            assert_eq!(normalize_fingerprint(bad), None, "{bad}");
        }
        assert_eq!(canonical.len(), 32 * 3 - 1);
        assert!(canonical
            .chars()
            .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase()));
        assert!(client_config(Pin::Fingerprint("nope".into())).is_err());
    }

    /// Serves one TLS connection that sends "hello" and reads it with `client`.
    async fn exchange(
        server: Arc<ServerConfig>,
        client: ClientConfig,
    ) -> std::io::Result<(Vec<u8>, Option<Vec<u8>>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(server);
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            tls.write_all(b"hello").await?;
            tls.shutdown().await
        });
        let connector = TlsConnector::from(Arc::new(client));
        let tcp = TcpStream::connect(addr).await?;
        let result = async {
            let mut tls = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let mut received = Vec::new();
            tls.read_to_end(&mut received).await?;
            Ok((received, alpn))
        }
        .await;
        let _ = served.await;
        result
    }

    fn with_alpn(config: Arc<ClientConfig>) -> ClientConfig {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config
    }

    #[tokio::test]
    async fn handshake_with_pinned_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (server, fp) = server_config(None, None, dir.path()).unwrap();

        let pinned = client_config(Pin::Fingerprint(fp.replace(':', "").to_lowercase())).unwrap();
        let (received, alpn) = exchange(server.clone(), with_alpn(pinned)).await.unwrap();
        assert_eq!(received, b"hello");
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

        let wrong = client_config(Pin::Fingerprint(fingerprint(b"another certificate"))).unwrap();
        let err = exchange(server.clone(), (*wrong).clone())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&fp), "{err}");

        let insecure = client_config(Pin::Insecure).unwrap();
        let (received, alpn) = exchange(server, (*insecure).clone()).await.unwrap();
        assert_eq!(received, b"hello");
        assert_eq!(alpn, None);
    }

    #[tokio::test]
    async fn handshake_with_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let (server, _) = server_config(None, None, dir.path()).unwrap();
        let (cert, _) = generated_cert_paths(dir.path());

        let trusted = client_config(Pin::Ca(cert)).unwrap();
        let (received, _) = exchange(server.clone(), (*trusted).clone()).await.unwrap();
        assert_eq!(received, b"hello");

        let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let other_ca = write(dir.path(), "other-ca.pem", &stranger.cert.pem());
        let untrusted = client_config(Pin::Ca(other_ca)).unwrap();
        assert!(exchange(server, (*untrusted).clone()).await.is_err());

        let msg = error(client_config(Pin::Ca(dir.path().join("none.pem"))));
        assert!(msg.contains("none.pem"), "{msg}");
    }
}
