//! A published message as the broker keeps it: routing facts, the publisher's raw properties
//! and the body, shared by every queue it was routed to.

use std::sync::OnceLock;

use bytes::Bytes;
use warren_codec::{BasicProperties, ShortString};
use warren_store::Location;

#[derive(Debug)]
pub struct Message {
    pub exchange: ShortString,
    pub routing_key: ShortString,
    /// Property flags and list exactly as the publisher sent them; consumers get them back
    /// byte for byte, so they are never re-encoded.
    pub raw_properties: Bytes,
    pub body: Bytes,
    /// `delivery_mode == 2`.
    pub persistent: bool,
    /// The store's id for a persistent message (0 while it has none).
    pub id: u64,
    /// Where the log holds it, once it is logged (so a queue can drop the body from memory).
    pub stored_at: OnceLock<Location>,
}

impl Message {
    /// Builds a message, reading what the broker needs from the properties (`delivery_mode`).
    pub fn new(
        exchange: ShortString,
        routing_key: ShortString,
        raw_properties: Bytes,
        body: Bytes,
        properties: &BasicProperties,
    ) -> Self {
        Message {
            exchange,
            routing_key,
            raw_properties,
            body,
            persistent: properties.delivery_mode == Some(2),
            id: 0,
            stored_at: OnceLock::new(),
        }
    }

    /// The decoded properties. Decoding is lazy because most messages are routed and delivered
    /// without anyone looking inside them.
    pub fn properties(&self) -> BasicProperties {
        BasicProperties::decode(self.raw_properties.clone()).unwrap_or_default()
    }

    /// Memory the message accounts for (body plus properties), for limits and metrics.
    pub fn size(&self) -> usize {
        self.body.len() + self.raw_properties.len()
    }
}
