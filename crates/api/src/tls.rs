//! TLS for the listener: TLS 1.3 and 1.2 only (rustls has no 1.1 or 1.0), AWS-LC
//! cryptography, ALPN h2 and http/1.1.
//!
//! Without a configured certificate the first start generates a self-signed one for
//! `localhost`, `127.0.0.1` and `::1` into `<data_dir>/tls/` (key file mode 0600), valid
//! for 397 days; later starts reuse it until it has less than 30 days left, then make a new
//! one (its end date is kept beside it in `cert.not_after`). Its SHA-256 fingerprint is
//! logged so a client can pin it.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoKey { path: PathBuf },
    #[error("private key {path} is readable by others (mode {mode:o}); fix with: chmod 600 {path}")]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("invalid certificate or key: {0}")]
    Rustls(String),
}

/// The listener's TLS setup and what to tell the operator about it.
pub struct TlsMaterial {
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate's DER, as colon-separated upper-case hex.
    pub fingerprint: String,
    pub cert_path: PathBuf,
    /// True when this start created the self-signed certificate.
    pub generated: bool,
}

/// Loads the configured certificate, or the generated one in `data_dir/tls`, creating it
/// on first start.
pub fn load_or_generate(data_dir: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<TlsMaterial, TlsError> {
    let (cert_path, key_path, generated) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf(), false),
        _ => {
            let dir = data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            let fresh = c.exists() && k.exists() && !expiring(&dir);
            let generated = if fresh { false } else { generate(&dir, &c, &k)? };
            (c, k, generated)
        }
    };
    check_key_mode(&key_path)?;
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let fingerprint = fingerprint(&certs[0]);
    let config = server_config(certs, key)?;
    Ok(TlsMaterial { config, fingerprint, cert_path, generated })
}

/// A rustls server configuration restricted to TLS 1.3 and 1.2.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Lifetime of a generated certificate (the longest that browsers accept).
const VALIDITY_DAYS: i64 = 397;
/// A generated certificate with less than this left is replaced at start.
const RENEW_DAYS: i64 = 30;

/// True when the generated certificate's recorded end date is near, passed, or unknown.
fn expiring(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join("cert.not_after")) else { return true };
    let Ok(secs) = text.trim().parse::<i64>() else { return true };
    let left = secs - time::OffsetDateTime::now_utc().unix_timestamp();
    left < RENEW_DAYS * 86_400
}

fn generate(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<bool, TlsError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let gen_err = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(gen_err)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
    let key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    write_file(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(cert_path, cert.pem().as_bytes(), 0o644)?;
    let not_after = params.not_after.unix_timestamp().to_string();
    write_file(&dir.join("cert.not_after"), not_after.as_bytes(), 0o644)?;
    Ok(true)
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let err = |source| TlsError::Write { path: path.to_path_buf(), source };
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

fn check_key_mode(path: &Path) -> Result<(), TlsError> {
    let meta = fs::metadata(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyTooOpen { path: path.to_path_buf(), mode });
    }
    Ok(())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TlsError::NoKey { path: path.to_path_buf() })
}

/// `AB:CD:…` SHA-256 fingerprint of a DER certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    Sha256::digest(cert.as_ref()).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_a_private_key_file() {
        let dir = tempfile_dir();
        let first = load_or_generate(&dir, None, None).expect("generate");
        assert!(first.generated);
        let mode = fs::metadata(dir.join("tls/key.pem")).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_generate(&dir, None, None).expect("reuse");
        assert!(!second.generated);
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        // Near its end date, the generated certificate is replaced.
        let soon = time::OffsetDateTime::now_utc().unix_timestamp() + 86_400;
        fs::write(dir.join("tls/cert.not_after"), soon.to_string()).expect("write");
        let renewed = load_or_generate(&dir, None, None).expect("renew");
        assert!(renewed.generated && renewed.fingerprint != first.fingerprint, "renewed");
        assert!(!expiring(&dir.join("tls")), "the new one has a year to go");
        fs::set_permissions(dir.join("tls/key.pem"), fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_or_generate(&dir, None, None).err().expect("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ward-tls-{}", uuid::Uuid::now_v7()));
        fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
