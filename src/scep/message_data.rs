//! The messageData of CertPoll, GetCert and GetCRL (RFC 8894 §3.3.3, §3.3.4): what the
//! opened pkcsPKIEnvelope holds when the request carries no CSR.

use cms::cert::IssuerAndSerialNumber;
use der::{Decode, Encode, Sequence};
use x509_cert::name::Name;
use x509_cert::Certificate;

/// `IssuerAndSubject` (RFC 8894 §3.3.3), the messageData of CertPoll:
///
/// ```text
/// IssuerAndSubject ::= SEQUENCE {
///     issuer     Name,
///     subject    Name }
/// ```
///
/// The server keys its lookup on the transactionID (§3.3.3); the names are informative.
#[derive(Clone, Debug, PartialEq, Eq, Sequence)]
pub struct IssuerAndSubject {
    /// The issuing CA's name.
    pub issuer: Name,
    /// The subject of the requested certificate.
    pub subject: Name,
}

/// Reads the IssuerAndSerialNumber (RFC 5652 §10.2.4) of a GetCert or GetCRL (RFC 8894
/// §3.3.4):
///
/// ```text
/// IssuerAndSerialNumber ::= SEQUENCE {
///     issuer Name,
///     serialNumber CertificateSerialNumber }
/// ```
pub fn parse_issuer_and_serial(der: &[u8]) -> der::Result<IssuerAndSerialNumber> {
    IssuerAndSerialNumber::from_der(der)
}

/// Reads the IssuerAndSubject of a CertPoll.
pub fn parse_issuer_and_subject(der: &[u8]) -> der::Result<IssuerAndSubject> {
    IssuerAndSubject::from_der(der)
}

/// The IssuerAndSerialNumber naming `serial` (the INTEGER's content octets) under the
/// subject of `issuer_cert_der`: the messageData a client sends with GetCert or GetCRL.
pub fn encode_issuer_and_serial(issuer_cert_der: &[u8], serial: &[u8]) -> der::Result<Vec<u8>> {
    let issuer = Certificate::from_der(issuer_cert_der)?
        .tbs_certificate
        .subject;
    IssuerAndSerialNumber {
        issuer,
        serial_number: x509_cert::serial_number::SerialNumber::new(serial)?,
    }
    .to_der()
}

/// The IssuerAndSubject a client sends with CertPoll: the CA's subject and the CSR's.
pub fn encode_issuer_and_subject(issuer: &Name, subject: &Name) -> der::Result<Vec<u8>> {
    IssuerAndSubject {
        issuer: issuer.clone(),
        subject: subject.clone(),
    }
    .to_der()
}

/// The content octets of a serial number (`Int` without sign padding beyond DER's).
pub fn serial_octets(serial: &x509_cert::serial_number::SerialNumber) -> Vec<u8> {
    serial.as_bytes().to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::scep::testing::pki;

    #[test]
    fn issuer_and_serial_round_trips() {
        let ca_der = pki().ca.der();
        let der = encode_issuer_and_serial(&ca_der, &[0x01, 0x02, 0x03]).unwrap();
        let parsed = parse_issuer_and_serial(&der).unwrap();
        assert_eq!(serial_octets(&parsed.serial_number), vec![1, 2, 3]);
        let cert = Certificate::from_der(&ca_der).unwrap();
        assert_eq!(parsed.issuer, cert.tbs_certificate.subject);
    }

    #[test]
    fn issuer_and_subject_round_trips_and_garbage_is_an_error() {
        let cert = Certificate::from_der(&pki().ca.der()).unwrap();
        let name = cert.tbs_certificate.subject.clone();
        let der = encode_issuer_and_subject(&name, &name).unwrap();
        assert_eq!(parse_issuer_and_subject(&der).unwrap().subject, name);
        assert!(parse_issuer_and_subject(&[0x30, 0x03, 0x02, 0x01]).is_err());
        assert!(parse_issuer_and_serial(&[]).is_err());
    }
}
