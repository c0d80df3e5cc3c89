//! The HTTP request readers (RFC 8894 §4.1): path classification, query splitting and the
//! lenient base64 of GET PKIOperation never panic, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scepd::http::request::{classify_path, decode_message, parse_query, Operation};

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    let _ = classify_path(path);
    let parsed = parse_query(query);
    if let Some(operation) = parsed.operation.as_deref() {
        let _ = Operation::parse(operation);
    }
    if let Some(message) = parsed.message.as_deref() {
        let _ = decode_message(message);
    }
});
