//! A channel with no socket: a [`ChannelMachine`] on a connection registered with the broker
//! as a real one would be, for code that feeds it AMQP methods and frames directly and reads
//! what it queues for the client (the channel's unit tests, the fuzz checks).

use std::net::SocketAddr;
use std::sync::Arc;

use warren_broker::stats::ConnectionCounters;
use warren_broker::{Broker, BrokerError, ConnectionControl, ConnectionInfo};
use warren_codec::FieldTable;

use crate::channel::ChannelMachine;
use crate::connection::ConnCtx;
use crate::outbox::ConnOutbox;

/// Channel 1 of a connection of `guest` to `/`.
pub struct Driven {
    pub ctx: ConnCtx,
    pub machine: ChannelMachine,
    /// What the channel sent its client.
    pub outbox: Arc<ConnOutbox>,
}

/// Nobody to tell: there is no socket to close.
struct NoControl;

impl ConnectionControl for NoControl {
    fn close(&self, _reason: &str) {}
}

/// Opens channel 1 for `guest` on `broker`'s default vhost, as connection 1, with messages of
/// up to `max_message_size` bytes.
pub fn driven(broker: &Arc<Broker>, max_message_size: u64) -> Result<Driven, BrokerError> {
    let user = broker.authenticate("guest", "guest", true)?;
    let session = broker.open_session(&user, "/", 1)?;
    let peer = SocketAddr::from(([127, 0, 0, 1], 1000));
    let local = SocketAddr::from(([127, 0, 0, 1], 5672));
    let info = ConnectionInfo {
        name: ConnectionInfo::name_for(peer, local),
        peer,
        local,
        user: "guest".into(),
        vhost: "/".into(),
        client_properties: FieldTable::new(),
        connected_at: 0,
        protocol: "AMQP 0-9-1",
        auth_mechanism: "PLAIN".into(),
        frame_max: 131_072,
        channel_max: 2047,
        heartbeat: 0,
        tls: None,
    };
    let registered = broker.register_connection(
        &session,
        info,
        Arc::new(ConnectionCounters::default()),
        Box::new(NoControl),
    );
    let outbox = Arc::new(ConnOutbox::new());
    let channel = registered.open_channel(1, outbox.clone())?;
    let ctx = ConnCtx::new(
        session,
        registered,
        broker.durability(),
        outbox.clone(),
        max_message_size,
    );
    Ok(Driven {
        ctx,
        machine: ChannelMachine::new(1, channel),
        outbox,
    })
}
