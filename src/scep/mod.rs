//! Sans-IO SCEP codec (RFC 8894).
