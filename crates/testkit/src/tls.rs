//! Throwaway certificates for TLS tests, generated at test time with `rcgen`.
//!
//! [`TestPki::generate`] writes, into its own temporary directory, a CA, a
//! server certificate valid for `localhost` and `127.0.0.1` signed by it, a
//! client certificate signed by it (for mutual TLS), and a second, unrelated
//! CA that a client can be pointed at to see a verification failure.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// PEM files of a test certificate authority and the certificates it signed.
/// The directory is removed when this is dropped.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Generates a fresh CA, server and client certificates (and an unrelated
    /// CA) and writes them as PEM files. The server certificate is valid for
    /// `localhost` and `127.0.0.1`.
    pub fn generate() -> anyhow::Result<Self> {
        Self::generate_for(&["localhost", "127.0.0.1"])
    }

    /// Like [`generate`](Self::generate), with a server certificate valid
    /// only for `server_names` (host names or IPs): a client connecting to
    /// another name must refuse it.
    pub fn generate_for(server_names: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-pki-")
            .tempdir()
            .context("create the certificate directory")?;
        let pki = Self { dir };

        let (ca_params, ca_key) = ca("Switchboard test CA")?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);
        pki.write("ca.crt", &ca_cert.pem())?;

        let server_key = KeyPair::generate()?;
        let names: Vec<String> = server_names.iter().map(|n| n.to_string()).collect();
        let mut server = CertificateParams::new(names)?;
        server.distinguished_name = name("redis test server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer)?;
        pki.write("server.crt", &server_cert.pem())?;
        pki.write("server.key", &server_key.serialize_pem())?;

        let client_key = KeyPair::generate()?;
        let mut client = CertificateParams::new(Vec::<String>::new())?;
        client.distinguished_name = name("switchboard test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer)?;
        pki.write("client.crt", &client_cert.pem())?;
        pki.write("client.key", &client_key.serialize_pem())?;

        let (other_params, other_key) = ca("Some other CA")?;
        pki.write("other-ca.crt", &other_params.self_signed(&other_key)?.pem())?;
        Ok(pki)
    }

    /// The CA certificate that signed the server and client certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// A CA that signed nothing here: verifying the server with it fails.
    pub fn other_ca_file(&self) -> PathBuf {
        self.path("other-ca.crt")
    }

    /// The server certificate.
    pub fn server_cert_file(&self) -> PathBuf {
        self.path("server.crt")
    }

    /// The server's private key.
    pub fn server_key_file(&self) -> PathBuf {
        self.path("server.key")
    }

    /// The client certificate, for mutual TLS.
    pub fn client_cert_file(&self) -> PathBuf {
        self.path("client.crt")
    }

    /// The client's private key.
    pub fn client_key_file(&self) -> PathBuf {
        self.path("client.key")
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, pem: &str) -> anyhow::Result<()> {
        let path = self.path(name);
        std::fs::write(&path, pem).with_context(|| format!("write {}", path.display()))
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn ca(common_name: &str) -> anyhow::Result<(CertificateParams, KeyPair)> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok((params, KeyPair::generate()?))
}
