//! Domain events, the transactional outbox and webhook delivery for neo-commons.
//!
//! This first part holds what senders and receivers share: [Standard Webhooks v1]
//! signatures ([`sign`], [`WebhookSecret`] with `whsec_` secrets and rotation) and the
//! receiver's [`Verifier`] (±5 minutes by default), checked against the Python reference
//! implementation in the tests. The outbox, dispatcher and delivery follow.
//!
//! [Standard Webhooks v1]: https://www.standardwebhooks.com/

mod signature;

pub use signature::{
    DEFAULT_TOLERANCE_SECS, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, SignatureError,
    SignedHeaders, Verifier, WebhookSecret, sign,
};
