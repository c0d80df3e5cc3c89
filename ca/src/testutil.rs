//! Helpers for the tests: CAs, CSRs made with openssl, inspection of issued certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::SystemTime;

use const_oid::ObjectIdentifier;
use der::asn1::{Any, BitString, BmpString, OctetString, SetOfVec};
use der::{Decode, Encode, Sequence};
use openssl::asn1::{Asn1Object, Asn1OctetString};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::stack::Stack;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Extension, X509NameBuilder, X509ReqBuilder, X509StoreContext, X509};
use x509_cert::attr::Attribute;
use x509_cert::ext::pkix::name::{GeneralName, OtherName};
use x509_cert::ext::Extension;
use x509_cert::request::CertReq;
use x509_cert::Certificate;

use crate::extensions::oid;
use crate::profile::profile_from_toml;
use crate::{
    generate_key, self_signed_ca, CaBackend, CaError, IssueRequest, Issued, KeySpec, Profile,
    SoftwareCa,
};

pub(crate) const SID_URI: &str = "tag:microsoft.com,2022-09-14:sid:S-1-5-21-1-2-3-1001";

pub(crate) fn ca(spec: KeySpec) -> SoftwareCa {
    let key = generate_key(spec).unwrap();
    let cert = self_signed_ca(&key, "CN=Test CA,O=scepd tests", 3650).unwrap();
    SoftwareCa::from_parts(cert, key, Vec::new()).unwrap()
}

/// What a test CSR asks for.
pub(crate) struct CsrSpec<'a> {
    pub key: &'a PKey<Private>,
    pub common_name: Option<&'a str>,
    pub dns: &'a [&'a str],
    pub uris: &'a [&'a str],
    pub emails: &'a [&'a str],
    pub ips: &'a [&'a str],
    pub sid_extension: bool,
    pub digest: MessageDigest,
}

impl<'a> CsrSpec<'a> {
    pub(crate) fn new(key: &'a PKey<Private>) -> Self {
        Self {
            key,
            common_name: Some("device-1"),
            dns: &[],
            uris: &[],
            emails: &[],
            ips: &[],
            sid_extension: false,
            digest: MessageDigest::sha256(),
        }
    }

    pub(crate) fn build(&self) -> Vec<u8> {
        let mut builder = X509ReqBuilder::new().unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("O", "Example").unwrap();
        if let Some(cn) = self.common_name {
            name.append_entry_by_text("CN", cn).unwrap();
        }
        builder.set_subject_name(&name.build()).unwrap();
        builder.set_pubkey(self.key).unwrap();
        let mut extensions = Stack::new().unwrap();
        if let Some(san) = self.san(&builder) {
            extensions.push(san).unwrap();
        }
        if self.sid_extension {
            extensions.push(sid_extension()).unwrap();
        }
        if !extensions.is_empty() {
            builder.add_extensions(&extensions).unwrap();
        }
        builder.sign(self.key, self.digest).unwrap();
        builder.build().to_der().unwrap()
    }

    fn san(&self, builder: &X509ReqBuilder) -> Option<X509Extension> {
        let mut san = SubjectAlternativeName::new();
        let mut any = false;
        for dns in self.dns {
            san.dns(dns);
            any = true;
        }
        for uri in self.uris {
            san.uri(uri);
            any = true;
        }
        for email in self.emails {
            san.email(email);
            any = true;
        }
        for ip in self.ips {
            san.ip(ip);
            any = true;
        }
        any.then(|| san.build(&builder.x509v3_context(None)).unwrap())
    }
}

/// The Microsoft SID extension value as AD CS writes it: GeneralNames holding one otherName
/// of type 1.3.6.1.4.1.311.25.2.1 whose value is the SID as an OCTET STRING.
pub(crate) fn sid_extension_value() -> Vec<u8> {
    let sid = OctetString::new(b"S-1-5-21-1-2-3-1001".to_vec()).unwrap();
    let name = GeneralName::OtherName(OtherName {
        type_id: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.25.2.1"),
        value: Any::encode_from(&sid).unwrap(),
    });
    vec![name].to_der().unwrap()
}

fn sid_extension() -> X509Extension {
    let object = Asn1Object::from_str("1.3.6.1.4.1.311.25.2").unwrap();
    let value = Asn1OctetString::new_from_bytes(&sid_extension_value()).unwrap();
    X509Extension::new_from_der(&object, false, &value).unwrap()
}

#[derive(Sequence)]
struct NameValuePair {
    name: BmpString,
    value: BmpString,
}

/// Adds Microsoft enrollmentNameValuePair attributes to a CSR and re-signs it.
pub(crate) fn with_name_value_pairs(
    csr_der: &[u8],
    key: &PKey<Private>,
    pairs: &[(&str, &str)],
) -> Vec<u8> {
    let mut request = CertReq::from_der(csr_der).unwrap();
    for (name, value) in pairs {
        let pair = NameValuePair {
            name: BmpString::from_utf8(name).unwrap(),
            value: BmpString::from_utf8(value).unwrap(),
        };
        let attribute = Attribute {
            oid: oid::MS_ENROLLMENT_NAME_VALUE_PAIR,
            values: SetOfVec::try_from(vec![Any::encode_from(&pair).unwrap()]).unwrap(),
        };
        request.info.attributes.insert(attribute).unwrap();
    }
    resign(request, key)
}

pub(crate) fn resign(mut request: CertReq, key: &PKey<Private>) -> Vec<u8> {
    let info = request.info.to_der().unwrap();
    let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), key).unwrap();
    signer.update(&info).unwrap();
    request.signature = BitString::from_bytes(&signer.sign_to_vec().unwrap()).unwrap();
    request.to_der().unwrap()
}

pub(crate) fn issue(ca: &SoftwareCa, csr: &[u8], profile: &Profile) -> Result<Issued, CaError> {
    ca.issue(&IssueRequest {
        csr_der: csr,
        profile,
        now: SystemTime::now(),
    })
}

pub(crate) fn default_profile() -> Profile {
    profile_from_toml("")
}

/// Verifies the signature with the CA key and the path with an X509Store.
pub(crate) fn assert_chains_to(ca: &SoftwareCa, der: &[u8]) {
    let ca_cert = X509::from_der(ca.certificate_der()).unwrap();
    let cert = X509::from_der(der).unwrap();
    assert!(cert.verify(&ca_cert.public_key().unwrap()).unwrap());
    let mut store = X509StoreBuilder::new().unwrap();
    store.add_cert(ca_cert).unwrap();
    let store = store.build();
    let mut context = X509StoreContext::new().unwrap();
    let chain = Stack::new().unwrap();
    let ok = context
        .init(&store, &cert, &chain, |c| {
            let ok = c.verify_cert()?;
            assert!(ok, "path validation: {}", c.error());
            Ok(ok)
        })
        .unwrap();
    assert!(ok);
}

pub(crate) fn extension(der: &[u8], id: ObjectIdentifier) -> Option<Extension> {
    let certificate = Certificate::from_der(der).unwrap();
    certificate
        .tbs_certificate
        .extensions
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.extn_id == id)
}

pub(crate) fn octets(extension: &Extension) -> &[u8] {
    let value: &OctetString = &extension.extn_value;
    value.as_bytes()
}
