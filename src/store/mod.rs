//! Durable state: transactions, issued certificates, revocations, challenge redemption.
