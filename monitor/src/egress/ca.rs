//! The egress proxy's certificate authority: created at the daemon's first start (its private key
//! readable by root only), it signs a certificate for each host a task asks the proxy to reach,
//! so that the task's clients complete TLS with the proxy, which reads their requests in
//! plaintext. Tasks trust it through a bundle of the host's roots plus this CA.

use std::{
    collections::HashMap,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// The CA's files, under the state directory.
pub const DIR: &str = "egress";
const KEY_FILE: &str = "ca.key";
const CERT_FILE: &str = "ca.pem";
/// The host's roots followed by the CA: what `SSL_CERT_FILE` and its kind point at, since they
/// replace the host's bundle rather than add to it.
const BUNDLE_FILE: &str = "trust.pem";
/// Host certificates kept; past this the cache starts again (a task reaches a handful of hosts).
const CACHE_HOSTS: usize = 4096;
/// Where Debian and its derivatives keep the host's roots as one PEM file.
const HOST_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read or write {path}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a PEM private key")]
    Key { path: PathBuf, source: rcgen::Error },
    #[error("cannot make a certificate")]
    Certificate(#[from] rcgen::Error),
    #[error("rustls cannot sign with a host certificate's key")]
    Signing(#[source] rustls::Error),
}

/// Where the CA's files are, for `task exec` and the README's operators.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaPaths {
    /// The CA certificate alone (`NODE_EXTRA_CA_CERTS`, which adds to Node's own roots).
    pub certificate: PathBuf,
    /// The host's roots and the CA (`SSL_CERT_FILE`, `CURL_CA_BUNDLE`, ...).
    pub bundle: PathBuf,
    /// The private key: guarded like a secret of no task.
    pub key: PathBuf,
}

pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// Host certificates by lower-case name, signed on first use.
    cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    pub paths: CaPaths,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("paths", &self.paths).finish_non_exhaustive()
    }
}

/// The CA's name and usages. Fixed, so that a restart signs with the stored key under the same
/// issuer name without parsing the stored certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "credwatch");
    name.push(DnType::CommonName, "credwatch egress proxy CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    valid_long(params)
}

/// The validity of every certificate here: fixed and long, so that neither a clock set back nor
/// a daemon running for years makes the proxy's certificates fail.
fn valid_long(mut params: CertificateParams) -> CertificateParams {
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params
}

impl Authority {
    /// Loads the CA from `state_dir/egress`, creating it (key mode 0600) on first start, and
    /// writes the trust bundle anew: the host's roots may have changed since.
    pub fn load_or_create(state_dir: &Path) -> Result<Self, CaError> {
        let dir = state_dir.join(DIR);
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| CaError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let paths = CaPaths { certificate: dir.join(CERT_FILE), bundle: dir.join(BUNDLE_FILE), key: dir.join(KEY_FILE) };
        let (key, created) = match std::fs::read_to_string(&paths.key) {
            Ok(pem) => (KeyPair::from_pem(&pem).map_err(|source| CaError::Key { path: paths.key.clone(), source })?, false),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate()?;
                write_private(&paths.key, key.serialize_pem().as_bytes()).map_err(io(&paths.key))?;
                (key, true)
            }
            Err(error) => return Err(io(&paths.key)(error)),
        };
        // A certificate made anew would carry a new serial; clients that kept the old one still
        // verify (same name, same key), but the file stays the same while the key does.
        let certificate = match std::fs::read_to_string(&paths.certificate) {
            Ok(pem) if !created => pem,
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(io(&paths.certificate)(error)),
            // Missing, or made for a key that is gone.
            Ok(_) | Err(_) => {
                let pem = ca_params().self_signed(&key)?.pem();
                write_public(&paths.certificate, pem.as_bytes()).map_err(io(&paths.certificate))?;
                pem
            }
        };
        let host_roots = std::fs::read(HOST_BUNDLE).unwrap_or_default();
        let bundle = [host_roots.as_slice(), b"\n", certificate.as_bytes()].concat();
        write_public(&paths.bundle, &bundle).map_err(io(&paths.bundle))?;
        Ok(Self { issuer: Issuer::new(ca_params(), key), cache: Mutex::new(HashMap::new()), paths })
    }

    /// A certificate for `host` (a name or an address), signed by the CA.
    pub fn certificate_for(&self, host: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let host = host.to_ascii_lowercase();
        if let Some(known) = self.cache.lock().expect("cache lock").get(&host) {
            return Ok(Arc::clone(known));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.clone()])?;
        params.distinguished_name.push(DnType::CommonName, host.as_str());
        let params = valid_long(params);
        let certificate = params.signed_by(&key, &self.issuer)?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&private).map_err(CaError::Signing)?;
        let certified = Arc::new(CertifiedKey::new(vec![CertificateDer::from(certificate.der().to_vec())], signing));
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_HOSTS {
            cache.clear();
        }
        cache.insert(host, Arc::clone(&certified));
        Ok(certified)
    }
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Written to a temporary name and renamed, so that a client never reads half a bundle.
fn write_public(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, contents)?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&temporary, path)
}

/// Picks the certificate by the name the client asked for (SNI), or else the host the proxy was
/// told (a CONNECT's, a redirected connection's original address).
#[derive(Debug)]
pub struct ForHost {
    pub authority: Arc<Authority>,
    pub fallback: String,
}

impl ResolvesServerCert for ForHost {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let host = hello.server_name().unwrap_or(&self.fallback);
        self.authority.certificate_for(host).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_kept_across_starts_and_its_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(&first.paths.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let certificate = std::fs::read(&first.paths.certificate).unwrap();
        let key = std::fs::read(&first.paths.key).unwrap();
        let second = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(std::fs::read(&second.paths.key).unwrap(), key, "the key is not replaced");
        assert_eq!(std::fs::read(&second.paths.certificate).unwrap(), certificate, "the same CA certificate");
        let bundle = std::fs::read_to_string(&second.paths.bundle).unwrap();
        assert!(bundle.ends_with(std::str::from_utf8(&certificate).unwrap()), "the bundle ends with the CA");
    }

    #[test]
    fn host_certificates_are_signed_once_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::load_or_create(dir.path()).unwrap();
        let first = authority.certificate_for("API.example.com").unwrap();
        let again = authority.certificate_for("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(authority.certificate_for("127.0.0.1").is_ok(), "an address gets a certificate too");
    }
}
