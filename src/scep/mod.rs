//! Sans-IO SCEP codec (RFC 8894): takes bytes, keys, time and randomness; returns values.
//! Knows nothing of tokio, hyper, files or the clock.

pub mod attributes;
pub mod ber;
pub mod client;
pub mod crypto;
pub mod csr;
pub mod decode;
pub mod envelope;
pub mod message_data;
pub mod oids;
pub mod reply;
pub mod signed;
#[cfg(test)]
mod testing;
pub mod wire;

use std::fmt;

/// `messageType` (RFC 8894 §3.2.1.2, Table 3), a PrintableString holding the decimal number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 3: the server's reply.
    CertRep,
    /// 17: renewal, signed with an existing certificate.
    RenewalReq,
    /// 19: initial enrollment.
    PkcsReq,
    /// 20: poll a pending request (formerly GetCertInitial).
    CertPoll,
    /// 21: fetch a certificate by issuer and serial.
    GetCert,
    /// 22: fetch a CRL.
    GetCrl,
}

impl MessageType {
    /// The number carried on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::CertRep => 3,
            Self::RenewalReq => 17,
            Self::PkcsReq => 19,
            Self::CertPoll => 20,
            Self::GetCert => 21,
            Self::GetCrl => 22,
        }
    }

    /// Parses the wire number; anything not in the allow-list is `None` (never a default).
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            3 => Some(Self::CertRep),
            17 => Some(Self::RenewalReq),
            19 => Some(Self::PkcsReq),
            20 => Some(Self::CertPoll),
            21 => Some(Self::GetCert),
            22 => Some(Self::GetCrl),
            _ => None,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::CertRep => "CertRep",
            Self::RenewalReq => "RenewalReq",
            Self::PkcsReq => "PKCSReq",
            Self::CertPoll => "CertPoll",
            Self::GetCert => "GetCert",
            Self::GetCrl => "GetCRL",
        };
        f.write_str(name)
    }
}

/// `pkiStatus` (RFC 8894 §3.2.1.3, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkiStatus {
    /// 0
    Success,
    /// 2
    Failure,
    /// 3
    Pending,
}

impl PkiStatus {
    /// The number carried on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 2,
            Self::Pending => 3,
        }
    }

    /// Parses the wire number.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Success),
            2 => Some(Self::Failure),
            3 => Some(Self::Pending),
            _ => None,
        }
    }
}

/// `failInfo` (RFC 8894 §3.2.1.4, Table 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailInfo {
    /// 0: unrecognised or unsupported algorithm.
    BadAlg,
    /// 1: integrity check (signature, envelope) failed.
    BadMessageCheck,
    /// 2: transaction not permitted or supported.
    BadRequest,
    /// 3: signingTime not close enough to the system time.
    BadTime,
    /// 4: no certificate could be identified matching the criteria.
    BadCertId,
}

impl FailInfo {
    /// The number carried on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::BadAlg => 0,
            Self::BadMessageCheck => 1,
            Self::BadRequest => 2,
            Self::BadTime => 3,
            Self::BadCertId => 4,
        }
    }

    /// Parses the wire number.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::BadAlg),
            1 => Some(Self::BadMessageCheck),
            2 => Some(Self::BadRequest),
            3 => Some(Self::BadTime),
            4 => Some(Self::BadCertId),
            _ => None,
        }
    }
}

impl fmt::Display for FailInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::BadAlg => "badAlg",
            Self::BadMessageCheck => "badMessageCheck",
            Self::BadRequest => "badRequest",
            Self::BadTime => "badTime",
            Self::BadCertId => "badCertId",
        };
        f.write_str(name)
    }
}

pub use crypto::{ContentCipher, DigestAlg, KeyTransport};
pub use decode::{decode, DecodeError, Limits, Opened, Received, Rejected, ReplyTo, Verified};
pub use envelope::RecipientKey;
pub use reply::{
    certs_only, encode_cert_rep, encode_cert_rep_at, EncodeError, Outcome, ReplySigner,
};
