//! BER to DER normalisation (ITU-T X.690 §8 BER, §10 DER).
//!
//! Real SCEP clients send BER: Apple and EJBCA use indefinite lengths (X.690 §8.1.3.6) and
//! constructed OCTET STRINGs (§8.7.3), and the `der` crate rejects both. [`normalize_to_der`]
//! rewrites such an encoding into the DER form the typed decoders accept:
//!
//! - every length becomes definite and minimal (§10.1); end-of-contents octets disappear;
//! - a constructed OCTET STRING, restricted character string or time (§8.7.3, §8.23.6) becomes
//!   one primitive string holding the concatenated segments (§10.2); a constructed BIT STRING
//!   (§8.6.4) likewise, keeping the last segment's unused-bits count;
//! - CMS `EncryptedContentInfo.encryptedContent` (`[0] IMPLICIT OCTET STRING`, RFC 5652 §6.1),
//!   which streaming encoders send constructed, becomes primitive too (see below);
//! - nothing else changes. `SET OF` contents keep the sender's order (a signature may cover
//!   them as sent, RFC 5652 §5.4), and primitive contents are copied byte for byte (a BOOLEAN
//!   or a BIT STRING's unused bits are the decoder's business).
//!
//! This is the one place in scepd that walks raw TLVs: everything after it decodes typed
//! structures with `der`, `cms` and `x509-cert`.
//!
//! ## Implicitly tagged strings
//!
//! Without the ASN.1 module a normaliser cannot tell `[0] IMPLICIT OCTET STRING` sent
//! constructed (`A0 80 04 .. 04 .. 00 00`) from `[0] EXPLICIT OCTET STRING` (`A0 .. 04 ..`), and
//! flattening the latter would corrupt every CMS eContent. So context-specific tags are kept as
//! they are, with one exception that SCEP needs: a constructed `[0]` whose first segment is an
//! OCTET STRING, in third place in a SEQUENCE that begins with an OBJECT IDENTIFIER and a
//! SEQUENCE. That is the shape of `EncryptedContentInfo ::= SEQUENCE { contentType,
//! contentEncryptionAlgorithm, encryptedContent [0] IMPLICIT OCTET STRING OPTIONAL }`
//! (RFC 5652 §6.1), which OpenSSL's `-stream`, NSS-derived encoders (Apple) and wolfSSL send
//! constructed.
//!
//! ## Bounds
//!
//! Nesting is limited to [`MAX_DEPTH`] constructed levels and the whole input to
//! [`MAX_ELEMENTS`] elements; a length larger than the rest of the input is refused before
//! anything is allocated for it; tag numbers are limited to 28 bits. Data after the top-level
//! element is an error. The caller bounds the input size.

/// Deepest nesting of constructed encodings accepted (a certificate needs about 10).
pub const MAX_DEPTH: usize = 32;

/// Most elements (TLVs, end-of-contents excluded) accepted in one input.
pub const MAX_ELEMENTS: usize = 100_000;

/// Tag numbers take at most this many base-128 octets (28 bits; X.690 §8.1.2.4).
const MAX_TAG_NUMBER_OCTETS: usize = 4;

/// Long-form lengths take at most this many octets (X.690 §8.1.3.5 allows 126).
const MAX_LENGTH_OCTETS: usize = 8;

/// Why an input is not acceptable BER. The context names the part that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BerError {
    /// The input ends inside an element.
    #[error("truncated BER: {0}")]
    Truncated(&'static str),
    /// The input breaks an X.690 rule.
    #[error("malformed BER: {0}")]
    Malformed(&'static str),
    /// The input exceeds one of the bounds in the module documentation.
    #[error("BER limit exceeded: {0}")]
    LimitExceeded(&'static str),
}

/// Rewrites one BER-encoded element into DER (see the module documentation for exactly what
/// changes). Input that is already DER comes back unchanged.
pub fn normalize_to_der(input: &[u8]) -> Result<Vec<u8>, BerError> {
    if is_der(input) {
        return Ok(input.to_vec());
    }
    let mut reader = Reader::new(input);
    let mut out = Vec::with_capacity(input.len());
    Rewriter::default().element(&mut reader, 0, Slot::Other, &mut out)?;
    if !reader.is_empty() {
        return Err(BerError::Malformed(
            "trailing data after the top-level element",
        ));
    }
    Ok(out)
}

/// True when `input` is one element that [`normalize_to_der`] would leave unchanged. Any
/// error counts as "not DER": the rewriting pass then reports it precisely.
fn is_der(input: &[u8]) -> bool {
    let mut reader = Reader::new(input);
    let mut checker = DerChecker::default();
    checker.element(&mut reader, 0, Slot::Other).is_ok() && reader.is_empty()
}

// ---------------------------------------------------------------------------------------------
// Reading identifiers and lengths (X.690 §8.1.2, §8.1.3)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Universal,
    Application,
    ContextSpecific,
    Private,
}

/// Universal tag numbers used below (X.680 §8.4, Table 1).
mod universal {
    pub const END_OF_CONTENTS: u32 = 0;
    pub const BIT_STRING: u32 = 3;
    pub const OCTET_STRING: u32 = 4;
    pub const OBJECT_IDENTIFIER: u32 = 6;
    pub const SEQUENCE: u32 = 16;
    pub const SET: u32 = 17;
}

/// The identifier octets of an element, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    class: Class,
    constructed: bool,
    number: u32,
}

impl Tag {
    fn is_universal(self, number: u32) -> bool {
        self.class == Class::Universal && self.number == number
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    Definite(usize),
    /// X.690 §8.1.3.6: contents end with two zero octets.
    Indefinite,
}

/// An element's identifier and length octets.
#[derive(Debug, Clone, Copy)]
struct Header<'a> {
    /// The identifier octets as received (already canonical: non-minimal tags are refused).
    identifier: &'a [u8],
    tag: Tag,
    length: Length,
    /// False for a definite length in a longer form than X.690 §10.1 allows.
    minimal_length: bool,
}

/// A cursor over input bytes that never reads past its slice.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { rest: input }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// X.690 §8.1.5: end-of-contents is exactly two zero octets.
    fn at_end_of_contents(&self) -> bool {
        self.rest.starts_with(&[0, 0])
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, BerError> {
        let (&first, rest) = self.rest.split_first().ok_or(BerError::Truncated(what))?;
        self.rest = rest;
        Ok(first)
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], BerError> {
        let head = self.rest.get(..len).ok_or(BerError::Truncated(what))?;
        self.rest = self.rest.get(len..).ok_or(BerError::Truncated(what))?;
        Ok(head)
    }

    /// The first contents octet of an element whose header was just read, if it has any.
    fn peek_first_content_byte(&self, length: Length) -> Option<u8> {
        match length {
            Length::Definite(0) => None,
            _ => self.rest.first().copied(),
        }
    }

    fn read_header(&mut self) -> Result<Header<'a>, BerError> {
        let start = self.rest;
        let tag = self.read_tag()?;
        let identifier_len = start.len() - self.rest.len();
        let identifier = start
            .get(..identifier_len)
            .ok_or(BerError::Truncated("identifier"))?;
        let (length, minimal_length) = self.read_length()?;
        if tag.is_universal(universal::END_OF_CONTENTS)
            && (tag.constructed || length != Length::Definite(0))
        {
            return Err(BerError::Malformed("malformed end-of-contents"));
        }
        Ok(Header {
            identifier,
            tag,
            length,
            minimal_length,
        })
    }

    /// X.690 §8.1.2.
    fn read_tag(&mut self) -> Result<Tag, BerError> {
        let first = self.byte("identifier")?;
        let class = match first >> 6 {
            0 => Class::Universal,
            1 => Class::Application,
            2 => Class::ContextSpecific,
            _ => Class::Private,
        };
        let constructed = first & 0x20 != 0;
        let low_bits = first & 0x1f;
        let number = if low_bits == 0x1f {
            self.read_long_tag_number()?
        } else {
            u32::from(low_bits)
        };
        Ok(Tag {
            class,
            constructed,
            number,
        })
    }

    /// X.690 §8.1.2.4: base-128, most significant first, no leading zero septet, and only
    /// for numbers of 31 and above.
    fn read_long_tag_number(&mut self) -> Result<u32, BerError> {
        let mut number: u32 = 0;
        for position in 0..MAX_TAG_NUMBER_OCTETS {
            let octet = self.byte("tag number")?;
            if position == 0 && octet == 0x80 {
                return Err(BerError::Malformed("tag number with a leading zero septet"));
            }
            number = (number << 7) | u32::from(octet & 0x7f);
            if octet & 0x80 == 0 {
                if number < 31 {
                    return Err(BerError::Malformed("long-form tag number below 31"));
                }
                return Ok(number);
            }
        }
        Err(BerError::LimitExceeded("tag number too large"))
    }

    /// X.690 §8.1.3. A definite length beyond the rest of the input is refused here, before
    /// any caller sizes a buffer from it.
    fn read_length(&mut self) -> Result<(Length, bool), BerError> {
        let first = self.byte("length")?;
        if first < 0x80 {
            return Ok((Length::Definite(usize::from(first)), true));
        }
        if first == 0x80 {
            return Ok((Length::Indefinite, true));
        }
        if first == 0xff {
            return Err(BerError::Malformed("reserved length octet 0xFF"));
        }
        let count = usize::from(first & 0x7f);
        if count > MAX_LENGTH_OCTETS {
            return Err(BerError::LimitExceeded("length field too long"));
        }
        let octets = self.take(count, "length")?;
        // At most 8 octets, so the u64 cannot overflow.
        let value = octets
            .iter()
            .fold(0u64, |acc, &octet| (acc << 8) | u64::from(octet));
        let len =
            usize::try_from(value).map_err(|_| BerError::LimitExceeded("length too large"))?;
        if len > self.rest.len() {
            return Err(BerError::Truncated("length exceeds the remaining input"));
        }
        let minimal = len >= 0x80 && octets.first() != Some(&0);
        Ok((Length::Definite(len), minimal))
    }
}

// ---------------------------------------------------------------------------------------------
// What to do with an element's contents

/// Where an element sits among its siblings, as far as the rewriting rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Third element of `SEQUENCE { OBJECT IDENTIFIER, SEQUENCE, ... }`: the place of CMS
    /// `encryptedContent [0] IMPLICIT OCTET STRING` (RFC 5652 §6.1).
    EncryptedContent,
    Other,
}

/// Tracks the first children of a SEQUENCE to recognise [`Slot::EncryptedContent`].
struct SiblingShape {
    parent_is_sequence: bool,
    seen: usize,
    starts_with_oid_then_sequence: bool,
}

impl SiblingShape {
    fn new(parent: Tag) -> Self {
        Self {
            parent_is_sequence: parent.is_universal(universal::SEQUENCE),
            seen: 0,
            starts_with_oid_then_sequence: true,
        }
    }

    fn slot_of_next(&self) -> Slot {
        if self.parent_is_sequence && self.seen == 2 && self.starts_with_oid_then_sequence {
            Slot::EncryptedContent
        } else {
            Slot::Other
        }
    }

    fn record(&mut self, tag: Tag) {
        let expected = match self.seen {
            0 => Some(Tag {
                class: Class::Universal,
                constructed: false,
                number: universal::OBJECT_IDENTIFIER,
            }),
            1 => Some(Tag {
                class: Class::Universal,
                constructed: true,
                number: universal::SEQUENCE,
            }),
            _ => None,
        };
        if expected.is_some_and(|expected| expected != tag) {
            self.starts_with_oid_then_sequence = false;
        }
        self.seen = self.seen.saturating_add(1);
    }
}

/// How a constructed element's contents are re-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contents {
    /// Keep it constructed; normalise each child in order.
    Children,
    /// Concatenate OCTET STRING segments into one primitive string (X.690 §8.7.3, §10.2).
    OctetSegments,
    /// Concatenate BIT STRING segments (X.690 §8.6.4, §10.2).
    BitSegments,
}

/// Decides the re-encoding of a constructed element. `first_content_byte` is the first octet
/// of its contents, used only to recognise an implicitly tagged string in its slot.
fn constructed_contents(
    tag: Tag,
    slot: Slot,
    first_content_byte: Option<u8>,
) -> Result<Contents, BerError> {
    match tag.class {
        Class::Universal => universal_constructed_contents(tag.number),
        Class::ContextSpecific
            if tag.number == 0
                && slot == Slot::EncryptedContent
                && matches!(first_content_byte, Some(0x04 | 0x24)) =>
        {
            Ok(Contents::OctetSegments)
        }
        _ => Ok(Contents::Children),
    }
}

fn universal_constructed_contents(number: u32) -> Result<Contents, BerError> {
    match number {
        universal::BIT_STRING => Ok(Contents::BitSegments),
        // OCTET STRING, ObjectDescriptor, the restricted character strings and the time types
        // are all encoded like OCTET STRING (X.690 §8.7, §8.23.5; X.680 §46, §47).
        4 | 7 | 12 | 18..=28 | 30 => Ok(Contents::OctetSegments),
        // BOOLEAN, INTEGER, NULL, OBJECT IDENTIFIER, REAL, ENUMERATED, RELATIVE-OID.
        1 | 2 | 5 | 6 | 9 | 10 | 13 => Err(BerError::Malformed(
            "constructed encoding of a primitive type",
        )),
        _ => Ok(Contents::Children),
    }
}

/// Refuses primitive encodings that X.690 never allows.
fn check_primitive(header: &Header<'_>) -> Result<(), BerError> {
    if header.length == Length::Indefinite {
        return Err(BerError::Malformed(
            "indefinite length on a primitive encoding",
        ));
    }
    if header.tag.is_universal(universal::SEQUENCE) || header.tag.is_universal(universal::SET) {
        return Err(BerError::Malformed("primitive SEQUENCE or SET"));
    }
    if header.tag.is_universal(universal::END_OF_CONTENTS) {
        return Err(BerError::Malformed("unexpected end-of-contents"));
    }
    Ok(())
}

fn check_depth(depth: usize) -> Result<(), BerError> {
    if depth >= MAX_DEPTH {
        return Err(BerError::LimitExceeded("nesting too deep"));
    }
    Ok(())
}

/// Counts elements against [`MAX_ELEMENTS`].
#[derive(Default)]
struct ElementBudget {
    seen: usize,
}

impl ElementBudget {
    fn spend(&mut self) -> Result<(), BerError> {
        self.seen += 1;
        if self.seen > MAX_ELEMENTS {
            return Err(BerError::LimitExceeded("too many elements"));
        }
        Ok(())
    }
}

/// Calls `visit` once per child of a constructed element whose header was just read, then
/// consumes the end-of-contents of an indefinite length.
fn for_each_child<'a, S>(
    state: &mut S,
    reader: &mut Reader<'a>,
    length: Length,
    mut visit: impl FnMut(&mut S, &mut Reader<'a>) -> Result<(), BerError>,
) -> Result<(), BerError> {
    match length {
        Length::Definite(len) => {
            let mut contents = Reader::new(reader.take(len, "contents")?);
            while !contents.is_empty() {
                visit(state, &mut contents)?;
            }
        }
        Length::Indefinite => loop {
            if reader.at_end_of_contents() {
                reader.take(2, "end-of-contents")?;
                break;
            }
            if reader.is_empty() {
                return Err(BerError::Truncated("missing end-of-contents"));
            }
            visit(state, reader)?;
        },
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The DER check (fast path)

/// Walks an encoding without copying it, failing at the first thing the rewriter would change.
#[derive(Default)]
struct DerChecker {
    budget: ElementBudget,
}

impl DerChecker {
    fn element(
        &mut self,
        reader: &mut Reader<'_>,
        depth: usize,
        slot: Slot,
    ) -> Result<Tag, BerError> {
        const REWRITE_NEEDED: BerError = BerError::Malformed("not DER");
        let header = reader.read_header()?;
        self.budget.spend()?;
        if !header.minimal_length {
            return Err(REWRITE_NEEDED);
        }
        if !header.tag.constructed {
            check_primitive(&header)?;
            if let Length::Definite(len) = header.length {
                reader.take(len, "contents")?;
            }
            return Ok(header.tag);
        }
        check_depth(depth)?;
        let first = reader.peek_first_content_byte(header.length);
        if header.length == Length::Indefinite
            || constructed_contents(header.tag, slot, first)? != Contents::Children
        {
            return Err(REWRITE_NEEDED);
        }
        let mut shape = SiblingShape::new(header.tag);
        for_each_child(self, reader, header.length, |checker, contents| {
            let tag = checker.element(contents, depth + 1, shape.slot_of_next())?;
            shape.record(tag);
            Ok(())
        })?;
        Ok(header.tag)
    }
}

// ---------------------------------------------------------------------------------------------
// The rewriting pass

/// Accumulates a constructed BIT STRING (X.690 §8.6.4): every segment but the last must use
/// all its bits.
#[derive(Default)]
struct BitSegments {
    bits: Vec<u8>,
    unused_in_last: u8,
}

impl BitSegments {
    fn push(&mut self, segment: &[u8]) -> Result<(), BerError> {
        let (&unused, bits) = segment
            .split_first()
            .ok_or(BerError::Malformed("empty BIT STRING segment"))?;
        if self.unused_in_last != 0 {
            return Err(BerError::Malformed(
                "BIT STRING segment after a partial octet",
            ));
        }
        if unused > 7 || (bits.is_empty() && unused != 0) {
            return Err(BerError::Malformed(
                "bad unused-bits count in a BIT STRING segment",
            ));
        }
        self.bits.extend_from_slice(bits);
        self.unused_in_last = unused;
        Ok(())
    }

    fn into_contents(self) -> Vec<u8> {
        let mut contents = Vec::with_capacity(self.bits.len() + 1);
        contents.push(self.unused_in_last);
        contents.extend_from_slice(&self.bits);
        contents
    }
}

#[derive(Default)]
struct Rewriter {
    budget: ElementBudget,
}

impl Rewriter {
    /// Normalises one element into `out` and returns its tag as received.
    fn element(
        &mut self,
        reader: &mut Reader<'_>,
        depth: usize,
        slot: Slot,
        out: &mut Vec<u8>,
    ) -> Result<Tag, BerError> {
        let header = reader.read_header()?;
        self.budget.spend()?;
        if !header.tag.constructed {
            check_primitive(&header)?;
            let contents = match header.length {
                Length::Definite(len) => reader.take(len, "contents")?,
                Length::Indefinite => {
                    return Err(BerError::Malformed(
                        "indefinite length on a primitive encoding",
                    ))
                }
            };
            write_element(out, header.identifier, contents);
            return Ok(header.tag);
        }
        check_depth(depth)?;
        let first = reader.peek_first_content_byte(header.length);
        match constructed_contents(header.tag, slot, first)? {
            Contents::Children => {
                let mut contents = Vec::new();
                let mut shape = SiblingShape::new(header.tag);
                for_each_child(self, reader, header.length, |rewriter, inner| {
                    let tag =
                        rewriter.element(inner, depth + 1, shape.slot_of_next(), &mut contents)?;
                    shape.record(tag);
                    Ok(())
                })?;
                write_element(out, header.identifier, &contents);
            }
            Contents::OctetSegments => {
                let mut octets = Vec::new();
                self.octet_segments(reader, header.length, depth + 1, &mut octets)?;
                write_element(out, &primitive_identifier(header.identifier), &octets);
            }
            Contents::BitSegments => {
                let mut bits = BitSegments::default();
                self.bit_segments(reader, header.length, depth + 1, &mut bits)?;
                write_element(
                    out,
                    &primitive_identifier(header.identifier),
                    &bits.into_contents(),
                );
            }
        }
        Ok(header.tag)
    }

    /// Appends the contents of each OCTET STRING segment (X.690 §8.7.3.2: segments are
    /// OCTET STRINGs, themselves possibly constructed).
    fn octet_segments(
        &mut self,
        reader: &mut Reader<'_>,
        length: Length,
        depth: usize,
        octets: &mut Vec<u8>,
    ) -> Result<(), BerError> {
        for_each_child(self, reader, length, |rewriter, inner| {
            let header = rewriter.segment_header(inner, universal::OCTET_STRING)?;
            if header.tag.constructed {
                check_depth(depth)?;
                return rewriter.octet_segments(inner, header.length, depth + 1, octets);
            }
            let contents = definite_contents(inner, header.length)?;
            octets.extend_from_slice(contents);
            Ok(())
        })
    }

    /// Collects BIT STRING segments (X.690 §8.6.4.1: segments are BIT STRINGs).
    fn bit_segments(
        &mut self,
        reader: &mut Reader<'_>,
        length: Length,
        depth: usize,
        bits: &mut BitSegments,
    ) -> Result<(), BerError> {
        for_each_child(self, reader, length, |rewriter, inner| {
            let header = rewriter.segment_header(inner, universal::BIT_STRING)?;
            if header.tag.constructed {
                check_depth(depth)?;
                return rewriter.bit_segments(inner, header.length, depth + 1, bits);
            }
            bits.push(definite_contents(inner, header.length)?)
        })
    }

    fn segment_header<'a>(
        &mut self,
        reader: &mut Reader<'a>,
        universal_number: u32,
    ) -> Result<Header<'a>, BerError> {
        let header = reader.read_header()?;
        self.budget.spend()?;
        if !header.tag.is_universal(universal_number) {
            return Err(BerError::Malformed("string segment of the wrong type"));
        }
        Ok(header)
    }
}

fn definite_contents<'a>(reader: &mut Reader<'a>, length: Length) -> Result<&'a [u8], BerError> {
    match length {
        Length::Definite(len) => reader.take(len, "segment contents"),
        Length::Indefinite => Err(BerError::Malformed(
            "indefinite length on a primitive encoding",
        )),
    }
}

/// The same identifier with the constructed bit (X.690 §8.1.2.5) cleared.
fn primitive_identifier(identifier: &[u8]) -> Vec<u8> {
    let mut primitive = identifier.to_vec();
    if let Some(first) = primitive.first_mut() {
        *first &= !0x20;
    }
    primitive
}

fn write_element(out: &mut Vec<u8>, identifier: &[u8], contents: &[u8]) {
    out.extend_from_slice(identifier);
    write_definite_length(out, contents.len());
    out.extend_from_slice(contents);
}

/// X.690 §10.1: the short form below 128, else the fewest length octets.
fn write_definite_length(out: &mut Vec<u8>, len: usize) {
    if let Ok(short) = u8::try_from(len) {
        if short < 0x80 {
            out.push(short);
            return;
        }
    }
    let octets = (len as u64).to_be_bytes();
    let significant = octets
        .iter()
        .position(|&octet| octet != 0)
        .unwrap_or(octets.len() - 1);
    let octets = octets.get(significant..).unwrap_or_default();
    // At most 8 octets, so the count fits the low seven bits.
    out.push(0x80 | octets.len() as u8);
    out.extend_from_slice(octets);
}

#[cfg(test)]
mod tests {
    use super::*;
    use der::Decode;
    use std::process::Command;

    const SIGNED_BER: &[u8] = include_bytes!("../../tests/data/cms-signed-indefinite-ber.der");
    const ENVELOPED_BER: &[u8] =
        include_bytes!("../../tests/data/cms-enveloped-indefinite-ber.der");
    const FIXTURE_CERT_PEM: &[u8] = include_bytes!("../../tests/data/ber-fixture-cert.pem");

    fn normalized(input: &[u8]) -> Vec<u8> {
        normalize_to_der(input).expect("normalizes")
    }

    #[test]
    fn indefinite_sequence_becomes_definite() {
        let ber = [0x30, 0x80, 0x02, 0x01, 0x05, 0x00, 0x00];
        assert_eq!(normalized(&ber), [0x30, 0x03, 0x02, 0x01, 0x05]);
    }

    #[test]
    fn nested_indefinite_lengths_are_resolved() {
        // SEQUENCE { SEQUENCE { NULL }, [1] { INTEGER 7 } } with every length indefinite.
        let ber = [
            0x30, 0x80, 0x30, 0x80, 0x05, 0x00, 0x00, 0x00, 0xa1, 0x80, 0x02, 0x01, 0x07, 0x00,
            0x00, 0x00, 0x00,
        ];
        let der = [
            0x30, 0x09, 0x30, 0x02, 0x05, 0x00, 0xa1, 0x03, 0x02, 0x01, 0x07,
        ];
        assert_eq!(normalized(&ber), der);
    }

    #[test]
    fn constructed_octet_string_in_indefinite_form_is_concatenated() {
        let ber = [
            0x24, 0x80, 0x04, 0x02, 0xaa, 0xbb, 0x04, 0x01, 0xcc, 0x00, 0x00,
        ];
        assert_eq!(normalized(&ber), [0x04, 0x03, 0xaa, 0xbb, 0xcc]);
    }

    #[test]
    fn nested_constructed_octet_strings_are_concatenated() {
        // 24 { 04 'a', 24 { 04 'b', 04 'c' } } in definite form inside an indefinite SEQUENCE.
        let ber = [
            0x30, 0x80, 0x24, 0x0b, 0x04, 0x01, b'a', 0x24, 0x06, 0x04, 0x01, b'b', 0x04, 0x01,
            b'c', 0x00, 0x00,
        ];
        assert_eq!(normalized(&ber), [0x30, 0x05, 0x04, 0x03, b'a', b'b', b'c']);
    }

    #[test]
    fn constructed_character_string_is_concatenated() {
        // UTF8String sent constructed: segments are OCTET STRINGs (X.690 §8.23.6).
        let ber = [
            0x2c, 0x80, 0x04, 0x02, b'h', b'i', 0x04, 0x01, b'!', 0x00, 0x00,
        ];
        assert_eq!(normalized(&ber), [0x0c, 0x03, b'h', b'i', b'!']);
    }

    #[test]
    fn constructed_bit_string_keeps_the_last_unused_bits_count() {
        let ber = [
            0x23, 0x80, 0x03, 0x02, 0x00, 0xaa, 0x03, 0x02, 0x04, 0xb0, 0x00, 0x00,
        ];
        assert_eq!(normalized(&ber), [0x03, 0x03, 0x04, 0xaa, 0xb0]);
    }

    #[test]
    fn bit_string_segment_after_a_partial_octet_is_refused() {
        let ber = [0x23, 0x08, 0x03, 0x02, 0x04, 0xa0, 0x03, 0x02, 0x00, 0xbb];
        assert!(matches!(
            normalize_to_der(&ber),
            Err(BerError::Malformed(_))
        ));
    }

    #[test]
    fn string_segment_of_another_type_is_refused() {
        let ber = [0x24, 0x80, 0x02, 0x01, 0x01, 0x00, 0x00];
        assert!(matches!(
            normalize_to_der(&ber),
            Err(BerError::Malformed(_))
        ));
    }

    #[test]
    fn non_minimal_lengths_are_shortened() {
        let ber = [0x30, 0x82, 0x00, 0x04, 0x02, 0x81, 0x01, 0x05];
        assert_eq!(normalized(&ber), [0x30, 0x03, 0x02, 0x01, 0x05]);
    }

    #[test]
    fn long_lengths_are_written_minimally() {
        let mut ber = vec![0x30, 0x80, 0x04, 0x83, 0x00, 0x01, 0x00];
        ber.extend([0x5a; 256]);
        ber.extend([0x00, 0x00]);
        let out = normalized(&ber);
        assert_eq!(
            out.get(..8),
            Some(&[0x30, 0x82, 0x01, 0x04, 0x04, 0x82, 0x01, 0x00][..])
        );
        assert_eq!(out.len(), 8 + 256);
    }

    #[test]
    fn set_of_keeps_the_senders_order() {
        // SET { INTEGER 2, INTEGER 1 }: not in DER order, and must stay that way.
        let ber = [0x31, 0x80, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01, 0x00, 0x00];
        assert_eq!(
            normalized(&ber),
            [0x31, 0x06, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01]
        );
    }

    #[test]
    fn primitive_contents_are_untouched() {
        // BOOLEAN 0x01 is not DER's 0xFF; the decoder decides, not the normaliser.
        let ber = [0x30, 0x80, 0x01, 0x01, 0x01, 0x00, 0x00];
        assert_eq!(normalized(&ber), [0x30, 0x03, 0x01, 0x01, 0x01]);
    }

    #[test]
    fn long_form_tags_are_kept() {
        // [APPLICATION 200] constructed, indefinite, holding NULL.
        let ber = [0x7f, 0x81, 0x48, 0x80, 0x05, 0x00, 0x00, 0x00];
        assert_eq!(normalized(&ber), [0x7f, 0x81, 0x48, 0x02, 0x05, 0x00]);
    }

    #[test]
    fn malformed_long_form_tags_are_refused() {
        for ber in [
            &[0x9f, 0x80, 0x01, 0x00][..],               // leading zero septet
            &[0x9f, 0x1e, 0x00][..],                     // 30 fits the short form
            &[0x9f, 0x81, 0x81, 0x81, 0x81, 0x01, 0x00], // more than 28 bits
            &[0x9f, 0x81][..],                           // truncated
        ] {
            assert!(normalize_to_der(ber).is_err(), "{ber:02x?}");
        }
    }

    #[test]
    fn der_passes_through_unchanged() {
        let mut long_octet_string = vec![0x04, 0x81, 0x80];
        long_octet_string.extend([0x11; 0x80]);
        for der in [
            &[0x05, 0x00][..],
            &[0x30, 0x03, 0x02, 0x01, 0x05],
            &[0x30, 0x00],
            &[0xa0, 0x03, 0x04, 0x01, 0x00],
            &long_octet_string,
        ] {
            assert!(is_der(der), "{der:02x?}");
            assert_eq!(normalized(der), der);
        }
    }

    #[test]
    fn explicit_tag_holding_an_octet_string_is_not_flattened() {
        // ContentInfo { id-data, [0] EXPLICIT OCTET STRING }: the [0] is second, so it stays.
        let ber = [
            0x30, 0x80, 0x06, 0x03, 0x2a, 0x03, 0x04, 0xa0, 0x80, 0x04, 0x01, 0xee, 0x00, 0x00,
            0x00, 0x00,
        ];
        let der = [
            0x30, 0x0a, 0x06, 0x03, 0x2a, 0x03, 0x04, 0xa0, 0x03, 0x04, 0x01, 0xee,
        ];
        assert_eq!(normalized(&ber), der);
    }

    #[test]
    fn constructed_encrypted_content_becomes_primitive() {
        // EncryptedContentInfo { OID, AlgorithmIdentifier { OID }, [0] IMPLICIT { 04 .., 04 .. } }
        let ber = [
            0x30, 0x80, 0x06, 0x01, 0x2a, 0x30, 0x03, 0x06, 0x01, 0x2b, 0xa0, 0x80, 0x04, 0x01,
            0xaa, 0x04, 0x01, 0xbb, 0x00, 0x00, 0x00, 0x00,
        ];
        let der = [
            0x30, 0x0c, 0x06, 0x01, 0x2a, 0x30, 0x03, 0x06, 0x01, 0x2b, 0x80, 0x02, 0xaa, 0xbb,
        ];
        assert_eq!(normalized(&ber), der);
    }

    #[test]
    fn definite_constructed_encrypted_content_is_not_taken_for_der() {
        // wolfSSL's form: definite length, constructed [0]. Not DER, so not passed through.
        let ber = [
            0x30, 0x0e, 0x06, 0x01, 0x2a, 0x30, 0x03, 0x06, 0x01, 0x2b, 0xa0, 0x04, 0x04, 0x02,
            0xaa, 0xbb,
        ];
        let der = [
            0x30, 0x0c, 0x06, 0x01, 0x2a, 0x30, 0x03, 0x06, 0x01, 0x2b, 0x80, 0x02, 0xaa, 0xbb,
        ];
        assert_eq!(normalized(&ber), der);
    }

    fn nested_sequences(levels: usize) -> Vec<u8> {
        let mut ber = [0x30, 0x80].repeat(levels);
        ber.extend([0x00, 0x00].repeat(levels));
        ber
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted() {
        let out = normalized(&nested_sequences(MAX_DEPTH));
        assert_eq!(out.len(), 2 * MAX_DEPTH);
    }

    #[test]
    fn depth_bomb_is_refused() {
        let error = normalize_to_der(&nested_sequences(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(error, BerError::LimitExceeded("nesting too deep"));
        // A deep bomb built of nested constructed OCTET STRINGs hits the same limit.
        let mut strings = [0x24, 0x80].repeat(10_000);
        strings.extend([0x00, 0x00].repeat(10_000));
        assert_eq!(
            normalize_to_der(&strings).unwrap_err(),
            BerError::LimitExceeded("nesting too deep")
        );
    }

    #[test]
    fn element_bomb_is_refused() {
        let mut ber = vec![0x30, 0x80];
        ber.extend([0x05, 0x00].repeat(MAX_ELEMENTS));
        ber.extend([0x00, 0x00]);
        assert_eq!(
            normalize_to_der(&ber).unwrap_err(),
            BerError::LimitExceeded("too many elements")
        );
    }

    #[test]
    fn every_truncation_of_a_real_sample_is_refused() {
        for len in 0..SIGNED_BER.len() {
            let prefix = SIGNED_BER.get(..len).unwrap();
            assert!(
                normalize_to_der(prefix).is_err(),
                "prefix of {len} bytes accepted"
            );
        }
    }

    #[test]
    fn lengths_beyond_the_input_are_refused_early() {
        for ber in [
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..],
            &[0x04, 0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[
                0x04, 0x89, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
            ],
            &[0x04, 0x05, 0x00],
            &[0x30, 0x03, 0x04, 0x05, 0x00],
        ] {
            assert!(normalize_to_der(ber).is_err(), "{ber:02x?}");
        }
        assert!(matches!(
            normalize_to_der(&[0x04, 0x84, 0x7f, 0xff, 0xff, 0xff]),
            Err(BerError::Truncated("length exceeds the remaining input"))
        ));
    }

    #[test]
    fn garbage_is_refused() {
        for ber in [
            &[][..],
            &[0x00, 0x00],                   // end-of-contents at the top
            &[0x04, 0x80, 0x00, 0x00],       // indefinite primitive
            &[0x30, 0xff],                   // reserved length octet
            &[0x10, 0x00],                   // primitive SEQUENCE
            &[0x22, 0x03, 0x02, 0x01, 0x00], // constructed INTEGER
            &[0x30, 0x80, 0x05, 0x00],       // missing end-of-contents
            &[0x30, 0x80, 0x00, 0x01, 0x00], // malformed end-of-contents
            b"not asn.1 at all",
        ] {
            assert!(normalize_to_der(ber).is_err(), "{ber:02x?}");
        }
    }

    #[test]
    fn trailing_data_is_refused() {
        assert_eq!(
            normalize_to_der(&[0x05, 0x00, 0x05, 0x00]).unwrap_err(),
            BerError::Malformed("trailing data after the top-level element")
        );
        assert!(normalize_to_der(&[0x30, 0x80, 0x00, 0x00, 0x00]).is_err());
    }

    /// Certificates made by openssl with assorted keys and extensions: DER in, same DER out.
    fn openssl_certificates() -> Vec<Vec<u8>> {
        use openssl::{asn1, bn, ec, hash, nid, pkey, rsa, x509};
        let rsa_key = pkey::PKey::from_rsa(rsa::Rsa::generate(2048).unwrap()).unwrap();
        let group = ec::EcGroup::from_curve_name(nid::Nid::SECP384R1).unwrap();
        let ec_key = pkey::PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
        let mut certificates = vec![x509::X509::from_pem(FIXTURE_CERT_PEM)
            .unwrap()
            .to_der()
            .unwrap()];
        for (serial, key) in [rsa_key, ec_key].iter().enumerate() {
            let mut name = x509::X509NameBuilder::new().unwrap();
            name.append_entry_by_text("CN", "scepd normalise identity")
                .unwrap();
            name.append_entry_by_text("O", "Ünïcode Org").unwrap();
            let name = name.build();
            let mut builder = x509::X509Builder::new().unwrap();
            builder.set_version(2).unwrap();
            builder
                .set_serial_number(
                    &bn::BigNum::from_u32(serial as u32 + 1)
                        .unwrap()
                        .to_asn1_integer()
                        .unwrap(),
                )
                .unwrap();
            builder.set_subject_name(&name).unwrap();
            builder.set_issuer_name(&name).unwrap();
            builder.set_pubkey(key).unwrap();
            builder
                .set_not_before(&asn1::Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            builder
                .set_not_after(&asn1::Asn1Time::days_from_now(30).unwrap())
                .unwrap();
            let context = builder.x509v3_context(None, None);
            let san = x509::extension::SubjectAlternativeName::new()
                .dns("device.example")
                .email("a@example.com")
                .ip("192.0.2.1")
                .build(&context)
                .unwrap();
            builder.append_extension(san).unwrap();
            builder
                .append_extension(
                    x509::extension::BasicConstraints::new()
                        .critical()
                        .ca()
                        .build()
                        .unwrap(),
                )
                .unwrap();
            builder
                .append_extension(
                    x509::extension::KeyUsage::new()
                        .critical()
                        .key_cert_sign()
                        .digital_signature()
                        .build()
                        .unwrap(),
                )
                .unwrap();
            builder.sign(key, hash::MessageDigest::sha256()).unwrap();
            certificates.push(builder.build().to_der().unwrap());
        }
        certificates
    }

    #[test]
    fn normalising_der_certificates_is_the_identity() {
        for der in openssl_certificates() {
            assert!(is_der(&der));
            assert_eq!(normalized(&der), der);
        }
    }

    #[test]
    fn real_signed_data_sample_becomes_der_that_cms_decodes() {
        assert!(!is_der(SIGNED_BER));
        let der = normalized(SIGNED_BER);
        assert!(is_der(&der));
        let content_info = cms::content_info::ContentInfo::from_der(&der).expect("typed decode");
        let signed: cms::signed_data::SignedData =
            content_info.content.decode_as().expect("SignedData");
        let econtent = signed
            .encap_content_info
            .econtent
            .expect("embedded content");
        let text = der::asn1::OctetString::from_der(&econtent.to_der().unwrap()).unwrap();
        assert!(text.as_bytes().starts_with(b"scepd BER fixture"));
    }

    use der::Encode;

    #[test]
    fn real_enveloped_data_sample_becomes_der_that_cms_decodes() {
        let der = normalized(ENVELOPED_BER);
        let content_info = cms::content_info::ContentInfo::from_der(&der).expect("typed decode");
        let enveloped: cms::enveloped_data::EnvelopedData =
            content_info.content.decode_as().expect("EnvelopedData");
        let ciphertext = enveloped
            .encrypted_content
            .encrypted_content
            .expect("encryptedContent");
        assert_eq!(ciphertext.as_bytes().len(), 80); // the two streamed segments, 64 + 16 octets
    }

    /// Runs the openssl CLI with `input` in a file named `in.der`; returns (success, stdout).
    fn openssl_cli(args: &[&str], input: &[u8]) -> (bool, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.der"), input).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            include_bytes!("../../tests/data/ber-fixture-key.pem"),
        )
        .unwrap();
        std::fs::write(dir.path().join("cert.pem"), FIXTURE_CERT_PEM).unwrap();
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl CLI");
        (output.status.success(), output.stdout)
    }

    #[test]
    fn openssl_still_verifies_the_normalised_signed_data() {
        let (ok, content) = openssl_cli(
            &[
                "cms",
                "-verify",
                "-inform",
                "DER",
                "-in",
                "in.der",
                "-noverify",
            ],
            &normalized(SIGNED_BER),
        );
        assert!(ok, "openssl cms -verify refused the normalised bytes");
        assert!(content.starts_with(b"scepd BER fixture"));
        // And a flipped content byte is caught, so the check above means something.
        let mut tampered = normalized(SIGNED_BER);
        let position = tampered.windows(5).position(|w| w == b"scepd").unwrap();
        if let Some(byte) = tampered.get_mut(position) {
            *byte ^= 1;
        }
        let (ok, _) = openssl_cli(
            &[
                "cms",
                "-verify",
                "-inform",
                "DER",
                "-in",
                "in.der",
                "-noverify",
            ],
            &tampered,
        );
        assert!(!ok);
    }

    #[test]
    fn openssl_still_decrypts_the_normalised_enveloped_data() {
        let args = [
            "cms", "-decrypt", "-inform", "DER", "-in", "in.der", "-inkey", "key.pem", "-recip",
            "cert.pem",
        ];
        let (ok, content) = openssl_cli(&args, &normalized(ENVELOPED_BER));
        assert!(ok, "openssl cms -decrypt refused the normalised bytes");
        assert!(content.starts_with(b"scepd BER fixture"));
    }

    #[test]
    fn openssl_asn1parse_sees_definite_lengths_only() {
        let (ok, listing) = openssl_cli(
            &["asn1parse", "-inform", "DER", "-in", "in.der"],
            &normalized(SIGNED_BER),
        );
        assert!(ok);
        let listing = String::from_utf8_lossy(&listing);
        assert!(
            !listing.contains("l=inf") && !listing.contains("EOC"),
            "{listing}"
        );
    }

    /// A tiny deterministic generator (xorshift64*), so the smoke test needs no dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound.max(1) as u64) as usize
        }
    }

    /// Byte values that steer a mutation towards headers and lengths.
    const INTERESTING: [u8; 10] = [0x00, 0x01, 0x04, 0x24, 0x30, 0x7f, 0x80, 0x81, 0x84, 0xff];

    fn mutate(sample: &[u8], rng: &mut XorShift) -> Vec<u8> {
        let mut bytes = sample.to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(bytes.len());
            match rng.below(6) {
                0 => bytes.truncate(at),
                1 => {
                    bytes.remove(at.min(bytes.len().saturating_sub(1)));
                }
                2 => bytes.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                3 => {
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte = INTERESTING[rng.below(INTERESTING.len())];
                    }
                }
                4 => {
                    if let Some(byte) = bytes.get_mut(at) {
                        *byte ^= 1 << rng.below(8);
                    }
                }
                _ => {
                    let end = (at + rng.below(16)).min(bytes.len());
                    let chunk = bytes.get(at..end).unwrap_or_default().to_vec();
                    bytes.splice(at..at, chunk);
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        bytes
    }

    #[test]
    fn smoke_mutations_never_panic_and_normalising_is_idempotent() {
        let mut rng = XorShift(0x5eed_5cef_d000_0001);
        let mut accepted = 0;
        for round in 0..20_000 {
            let sample = if round % 2 == 0 {
                SIGNED_BER
            } else {
                ENVELOPED_BER
            };
            let input = mutate(sample, &mut rng);
            if let Ok(out) = normalize_to_der(&input) {
                accepted += 1;
                assert!(is_der(&out), "output is not DER for {input:02x?}");
                assert_eq!(
                    normalize_to_der(&out).as_ref(),
                    Ok(&out),
                    "not idempotent for {input:02x?}"
                );
            }
        }
        // Mutations inside contents keep the structure valid, so some must get through.
        assert!(accepted > 100, "only {accepted} mutations accepted");
    }
}
