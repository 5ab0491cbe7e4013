//! TLS for the broker connection: CA, client certificate (mTLS) and server name,
//! loaded and checked at start-up so a bad file fails before connecting.
//!
//! Uses rustls with the ring provider, passed explicitly: no process-wide
//! default provider is needed, so two providers can never collide at run time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What the config asks for; file paths are resolved by [`client_config`].
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificate(s) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and private key, for brokers that require one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Name to verify the broker's certificate against, when it differs from `host`
    /// (e.g. connecting by IP address to a broker whose certificate names its host).
    pub server_name: Option<String>,
}

/// A ready rustls client config. `Debug` shows nothing of the key.
#[derive(Clone)]
pub struct TlsClientConfig(pub Arc<ClientConfig>);

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClientConfig(..)")
    }
}

/// Why TLS could not be set up: (config key, reason). Never contains key material.
pub type TlsError = (&'static str, String);

/// Builds the client config, reading every file now.
pub fn client_config(options: &TlsOptions) -> Result<TlsClientConfig, TlsError> {
    // ring rather than aws-lc-rs: no C/CMake build in the image or in CI. rustls
    // 0.23.48 deprecates it for lacking post-quantum key exchange, which guards
    // recordings decrypted decades from now; codes expire in 30 s, and the
    // broker password is better rotated than relied on for decades.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = match &options.ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let certificates = read_certificates(path).map_err(|reason| ("tls.ca_file", reason))?;
            let (added, _ignored) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err((
                    "tls.ca_file",
                    format!("{}: no usable CA certificate in it", path.display()),
                ));
            }
            roots
        }
        None => system_roots()?,
    };
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| ("tls", error.to_string()))?;
    let builder = match &options.server_name {
        Some(name) => {
            let server_name = ServerName::try_from(name.clone()).map_err(|_| {
                (
                    "tls.server_name",
                    format!("'{name}' is not a valid DNS name or IP address"),
                )
            })?;
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|error| ("tls.ca_file", error.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ExpectedServerName {
                    inner,
                    server_name,
                }))
        }
        None => builder.with_root_certificates(roots),
    };
    let config = match (&options.cert_file, &options.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = read_certificates(cert_file).map_err(|reason| ("tls.cert_file", reason))?;
            if chain.is_empty() {
                return Err((
                    "tls.cert_file",
                    format!("{}: no certificate in it", cert_file.display()),
                ));
            }
            let key = read_private_key(key_file).map_err(|reason| ("tls.key_file", reason))?;
            builder.with_client_auth_cert(chain, key).map_err(|error| {
                (
                    "tls.key_file",
                    format!(
                        "{}: does not fit the client certificate: {error}",
                        key_file.display()
                    ),
                )
            })?
        }
        (Some(_), None) => {
            return Err((
                "tls.key_file",
                "is missing: `cert_file` needs its private key".into(),
            ));
        }
        (None, Some(_)) => {
            return Err((
                "tls.cert_file",
                "is missing: `key_file` needs its certificate".into(),
            ));
        }
        (None, None) => builder.with_no_client_auth(),
    };
    Ok(TlsClientConfig(Arc::new(config)))
}

fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err((
            "tls.ca_file",
            "is needed: no system CA certificates were found (install ca-certificates or name the broker's CA)".into(),
        ));
    }
    Ok(roots)
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("{}: cannot be read: {error}", path.display()))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_file(path)?;
    rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: not a PEM certificate file: {error}", path.display()))
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = zeroize::Zeroizing::new(read_file(path)?);
    match rustls_pemfile::private_key(&mut bytes.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(format!("{}: no PEM private key in it", path.display())),
        Err(_) => Err(format!("{}: not a PEM private key file", path.display())),
    }
}

/// Verifies the broker's certificate against a configured name instead of the
/// host we connect to; everything else is the standard WebPKI verification.
#[derive(Debug)]
struct ExpectedServerName {
    inner: Arc<WebPkiServerVerifier>,
    server_name: ServerName<'static>,
}

impl ServerCertVerifier for ExpectedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _connected_to: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            &self.server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
