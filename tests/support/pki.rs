//! A test CA made at test time (rcgen), and a leaf certificate it
//! signed, for the TLS and AUTH tests.

use rustls::pki_types::CertificateDer;
use std::path::{Path, PathBuf};

/// A test CA and a leaf certificate it signed. `cert` holds the full
/// chain.
pub struct Pki {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub ca_der: CertificateDer<'static>,
    pub leaf_der: CertificateDer<'static>,
}

/// For `localhost`, `mx.test.example` and `127.0.0.1`.
pub fn make_pki(dir: &Path, tag: &str) -> Pki {
    make_pki_for(
        dir,
        tag,
        &["localhost", "mx.test.example", "127.0.0.1"],
        &format!("mx.test.example {tag}"),
    )
}

/// A test CA and a leaf it signed for `names`, named `subject`; PEM files
/// in `dir`, their names ending in `tag`.
pub fn make_pki_for(dir: &Path, tag: &str, names: &[&str], subject: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("mailroom test CA {tag}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut leaf_params = CertificateParams::new(names).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, subject);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    let pki = Pki {
        cert: dir.join(format!("cert-{tag}.pem")),
        key: dir.join(format!("key-{tag}.pem")),
        ca: dir.join(format!("ca-{tag}.pem")),
        ca_der: ca.der().clone(),
        leaf_der: leaf.der().clone(),
    };
    std::fs::write(&pki.cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    pki
}

/// Sends alice@test.example a message with this subject with curl over
/// TLS (`smtp://` with STARTTLS required, or `smtps://`), trusting `ca`,
/// from `from`, with `extra` arguments (`--user`); asserts that curl
/// succeeded.
pub fn curl_to_alice(dir: &Path, url: &str, ca: &Path, extra: &[&str], from: &str, subject: &str) {
    let file = dir.join("curl.eml");
    std::fs::write(&file, format!("Subject: {subject}\r\n\r\nhi\r\n")).unwrap();
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--ssl-reqd", "--cacert"])
        .arg(ca)
        .args(extra)
        .args([url, "--mail-from", from])
        .args(["--mail-rcpt", "alice@test.example", "--upload-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
