//! The office's private TLS CA and its node certificate (rcgen, ECDSA P-256).
//!
//! Each office is its own root of trust. The CA signs exactly one node
//! certificate whose DNS name is `<office>.hotline`; the peer pins both the
//! CA and the node certificate's SHA-256 from the office card.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::OfficeName;

/// PEM-encoded CA and node certificate with their private keys.
pub struct TlsMaterial {
    /// CA certificate (public).
    pub ca_cert_pem: String,
    /// CA private key (secret; kept to reissue the node certificate).
    pub ca_key_pem: String,
    /// Node certificate (public).
    pub node_cert_pem: String,
    /// Node private key (secret).
    pub node_key_pem: String,
}

/// The CA's parameters. Deterministic from the office name (validity
/// aside), so the CA key alone can issue again: the issuer name and key
/// identifier come out the same.
fn ca_params(office: &OfficeName) -> CertificateParams {
    let now = time::OffsetDateTime::now_utc();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, format!("hotline office CA: {office}"));
    ca.distinguished_name
        .push(DnType::OrganizationName, office.as_str());
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(3650);
    ca
}

/// Generates a fresh CA and node certificate for `office`.
pub fn generate(office: &OfficeName) -> Result<TlsMaterial, rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let ca = ca_params(office);
    let ca_cert = ca.self_signed(&ca_key)?;
    let (node_cert_pem, node_key_pem) = issue_node_cert(office, ca, &ca_key)?;
    Ok(TlsMaterial {
        ca_cert_pem: ca_cert.pem(),
        ca_key_pem: ca_key.serialize_pem(),
        node_cert_pem,
        node_key_pem,
    })
}

/// Issues a new node certificate (and key) from the office's CA key, PEM.
/// The result chains to the office's CA but is *not* the certificate its
/// card pins until a new card is issued: peers refuse it as a card
/// mismatch, which tests rely on.
pub fn reissue_node_cert(
    office: &OfficeName,
    ca_key_pem: &str,
) -> Result<(String, String), rcgen::Error> {
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    issue_node_cert(office, ca_params(office), &ca_key)
}

fn issue_node_cert(
    office: &OfficeName,
    ca: CertificateParams,
    ca_key: &KeyPair,
) -> Result<(String, String), rcgen::Error> {
    let now = time::OffsetDateTime::now_utc();
    let node_key = KeyPair::generate()?;
    let mut node = CertificateParams::new(vec![office.server_name()])?;
    node.distinguished_name = DistinguishedName::new();
    node.distinguished_name
        .push(DnType::CommonName, format!("hotline node: {office}"));
    node.is_ca = IsCa::ExplicitNoCa;
    // Subject Key Identifier comes with ExplicitNoCa; the Authority Key
    // Identifier names the CA key (derived the same way as the CA's own
    // SKI), which `openssl verify -x509_strict` and other strict peers require.
    node.use_authority_key_identifier_extension = true;
    node.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    node.not_before = now - time::Duration::days(1);
    node.not_after = now + time::Duration::days(825);
    let issuer = Issuer::new(ca, ca_key);
    let node_cert = node.signed_by(&node_key, &issuer)?;
    Ok((node_cert.pem(), node_key.serialize_pem()))
}

/// Warn this long before the node certificate expires.
pub const EXPIRY_WARNING_DAYS: u64 = 60;

/// When a certificate (DER) stops being valid, Unix milliseconds; `None`
/// when it does not parse as X.509.
pub fn not_after_unix_ms(cert_der: &[u8]) -> Option<u64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    u64::try_from(secs).ok()?.checked_mul(1000)
}

/// A warning for a certificate that expires at `not_after_ms`, seen at
/// `now_ms`: `None` while more than [`EXPIRY_WARNING_DAYS`] remain.
pub fn expiry_warning(not_after_ms: u64, now_ms: u64) -> Option<String> {
    const DAY_MS: u64 = 86_400_000;
    if now_ms >= not_after_ms {
        return Some(
            "the node certificate has expired: peers refuse it; run `hotline rotate cert`".into(),
        );
    }
    let left = not_after_ms.saturating_sub(now_ms);
    (left <= EXPIRY_WARNING_DAYS.saturating_mul(DAY_MS)).then(|| {
        format!(
            "the node certificate expires in {} day(s): run `hotline rotate cert` before then",
            left / DAY_MS
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{pem::PemObject, CertificateDer};

    #[test]
    fn a_fresh_node_certificate_is_valid_for_825_days_and_warns_60_days_ahead() {
        let m = generate(&OfficeName::new("washington").unwrap()).unwrap();
        let der = CertificateDer::from_pem_slice(m.node_cert_pem.as_bytes()).unwrap();
        let not_after = not_after_unix_ms(&der).unwrap();
        let now = crate::node::wall_ms();
        let days = (not_after - now) / 86_400_000;
        assert!((823..=825).contains(&days), "{days}");
        assert_eq!(expiry_warning(not_after, now), None);
        let w = expiry_warning(not_after, not_after - 10 * 86_400_000).unwrap();
        assert!(w.contains("expires in 10 day"), "{w}");
        assert!(expiry_warning(not_after, not_after)
            .unwrap()
            .contains("expired"));
        assert_eq!(not_after_unix_ms(b"not a certificate"), None);
    }
}
