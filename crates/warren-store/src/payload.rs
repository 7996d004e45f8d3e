//! What a record carries as its body: bytes the caller already has, or a payload the writer
//! thread assembles itself.
//!
//! Why the second kind: a publisher that hands the store a `Bytes` must first allocate and
//! copy its message into one (and the writer thread, which drops it, frees memory another
//! thread allocated). With a [`Payload`] the publisher's path only clones an `Arc`; the writer,
//! which copies every record into its write buffer anyway, copies the pieces from their source.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// A body the writer assembles when it writes the record: [`Payload::write_head`]'s bytes,
/// then [`Payload::tail`]. It must not change once given to the store (its length is
/// reserved in the log at once, its bytes are written later).
pub trait Payload: Send + Sync {
    /// The body's whole length: what `write_head` appends plus the tail's length.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends the bytes that come before the tail (short: they are copied).
    fn write_head(&self, out: &mut Vec<u8>);
    /// The rest of the body (large ones are written from here without a copy).
    fn tail(&self) -> &[u8];
}

/// A record's body, as [`crate::Store::publish`] takes it.
#[derive(Clone)]
pub enum Body {
    Bytes(Bytes),
    Payload(Arc<dyn Payload>),
}

impl Body {
    pub fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Payload(p) => p.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends what comes before the tail (nothing for plain bytes).
    pub(crate) fn write_head(&self, out: &mut Vec<u8>) {
        if let Body::Payload(p) = self {
            p.write_head(out);
        }
    }

    /// The rest of the body (all of it for plain bytes).
    pub(crate) fn tail(&self) -> &[u8] {
        match self {
            Body::Bytes(b) => b,
            Body::Payload(p) => p.tail(),
        }
    }
}

impl Default for Body {
    /// No body (acks, deliveries, queue drops).
    fn default() -> Self {
        Body::Bytes(Bytes::new())
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Bytes(b)
    }
}

impl From<Arc<dyn Payload>> for Body {
    fn from(p: Arc<dyn Payload>) -> Self {
        Body::Payload(p)
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Bytes(b) => write!(f, "Body::Bytes({} bytes)", b.len()),
            Body::Payload(p) => write!(f, "Body::Payload({} bytes)", p.len()),
        }
    }
}
