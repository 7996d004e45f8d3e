//! Connections, channels and consumers from the broker's registry; closing a connection.

#[allow(unused_imports)]
use super::*;

pub(super) fn connection_json(http: &Http, c: &warren_broker::Connection) -> Value {
    let s = c.snapshot();
    let i = &s.info;
    let tls = i.tls.as_ref();
    let r = http.rates.get(&format!("connection/{}", i.name), 2);
    let user_provided = i
        .client_properties
        .get("connection_name")
        .map(field_to_json)
        .unwrap_or(Value::Null);
    json!({
        "name": i.name,
        "node": http.node.name,
        "type": "network",
        "state": s.state,
        "protocol": i.protocol,
        "user": i.user,
        "user_who_performed_action": i.user,
        "vhost": i.vhost,
        "auth_mechanism": i.auth_mechanism,
        "connected_at": i.connected_at,
        "host": i.local.ip().to_string(),
        "port": i.local.port(),
        "peer_host": i.peer.ip().to_string(),
        "peer_port": i.peer.port(),
        "ssl": tls.is_some(),
        "ssl_protocol": tls.map(|t| t.protocol.as_str()),
        "ssl_key_exchange": tls.map(|t| t.key_exchange.as_str()),
        "ssl_cipher": tls.map(|t| t.cipher.as_str()),
        "ssl_hash": tls.map(|t| t.hash.as_str()),
        "peer_cert_issuer": tls.and_then(|t| t.peer_cert_issuer.as_deref()),
        "peer_cert_subject": tls.and_then(|t| t.peer_cert_subject.as_deref()),
        "peer_cert_validity": tls.and_then(|t| t.peer_cert_validity.as_deref()),
        "channel_max": i.channel_max,
        "frame_max": i.frame_max,
        "timeout": i.heartbeat,
        "channels": s.channels,
        "client_properties": Value::Object(table_to_json(&i.client_properties)),
        "user_provided_name": user_provided,
        "recv_oct": s.recv_oct,
        "recv_oct_details": details(r[0]),
        "recv_cnt": s.recv_cnt,
        "send_oct": s.send_oct,
        "send_oct_details": details(r[1]),
        "send_cnt": s.send_cnt,
        "send_pend": 0,
    })
}

/// Connections the caller may see: all for monitoring users, their own otherwise.
pub(super) fn visible_connections(
    http: &Http,
    caller: &Caller,
) -> Vec<Arc<warren_broker::Connection>> {
    http.broker
        .connections()
        .into_iter()
        .filter(|c| caller.is_monitor() || c.info.user == caller.user.name)
        .collect()
}

pub(super) async fn connections(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    let items = visible_connections(&http, &caller)
        .iter()
        .map(|c| connection_json(&http, c))
        .collect();
    respond(items, &ListQuery::from_params(&p), &["vhost", "name"], true)
}

pub(super) async fn vhost_connections(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    let items = visible_connections(&http, &caller)
        .iter()
        .filter(|c| c.info.vhost == vhost)
        .map(|c| connection_json(&http, c))
        .collect();
    respond(
        items,
        &ListQuery::from_params(&p),
        &["vhost", "name"],
        false,
    )
}

pub(super) fn own_connection(
    http: &Http,
    caller: &Caller,
    name: &str,
) -> ApiResult<Arc<warren_broker::Connection>> {
    let c = http.broker.connection(name)?;
    if caller.is_monitor() || c.info.user == caller.user.name {
        Ok(c)
    } else {
        Err(ApiError::not_authorised(
            "User not authorised to access object",
        ))
    }
}

pub(super) async fn connection(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    let c = own_connection(&http, &caller, &name)?;
    Ok(respond_one(
        connection_json(&http, &c),
        &ListQuery::from_params(&p),
    ))
}

pub(super) async fn delete_connection(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let c = http.broker.connection(&name)?;
    if !(caller.is_admin() || c.info.user == caller.user.name) {
        return Err(ApiError::not_authorised(
            "User not authorised to access object",
        ));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    c.close(reason);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) fn channel_json(
    http: &Http,
    c: &warren_broker::ChannelSnapshot,
    conn: &warren_broker::ConnectionInfo,
) -> Value {
    let vals = values(&c.stats, CHANNEL_FIELDS);
    let rates = http.rates.get(&format!("channel/{}", c.name), vals.len());
    let mut o = json!({
        "name": c.name,
        "number": c.number,
        "node": http.node.name,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "state": "running",
        "confirm": c.mode == warren_broker::ChannelMode::Confirm,
        "transactional": c.mode == warren_broker::ChannelMode::Tx,
        "prefetch_count": c.prefetch_count,
        "global_prefetch_count": c.global_prefetch_count,
        "messages_unacknowledged": c.messages_unacknowledged,
        "messages_unconfirmed": c.messages_unconfirmed,
        "messages_uncommitted": 0,
        "acks_uncommitted": 0,
        "pending_raft_commands": 0,
        "consumer_count": c.consumer_count,
        "connection_details": {
            "name": conn.name,
            "peer_host": conn.peer.ip().to_string(),
            "peer_port": conn.peer.port(),
        },
    });
    if let Some(ms) = message_stats(CHANNEL_FIELDS, &vals, &rates, None) {
        o["message_stats"] = ms;
    }
    o
}

pub(super) fn channel_list(
    http: &Http,
    caller: &Caller,
    keep: impl Fn(&warren_broker::Connection) -> bool,
) -> Vec<Value> {
    visible_connections(http, caller)
        .iter()
        .filter(|c| keep(c))
        .flat_map(|c| {
            c.channels()
                .iter()
                .map(|ch| channel_json(http, &ch.snapshot(&c.info), &c.info))
                .collect::<Vec<_>>()
        })
        .collect()
}

pub(super) async fn channels(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    let items = channel_list(&http, &caller, |_| true);
    respond(items, &ListQuery::from_params(&p), &["vhost", "name"], true)
}

pub(super) async fn vhost_channels(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    let items = channel_list(&http, &caller, |c| c.info.vhost == vhost);
    respond(
        items,
        &ListQuery::from_params(&p),
        &["vhost", "name"],
        false,
    )
}

pub(super) async fn connection_channels(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    own_connection(&http, &caller, &name)?;
    let items = channel_list(&http, &caller, |c| c.info.name == name);
    respond(
        items,
        &ListQuery::from_params(&p),
        &["vhost", "name"],
        false,
    )
}

pub(super) async fn channel(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    let mut c = channel_list(&http, &caller, |_| true)
        .into_iter()
        .find(|c| c["name"] == name.as_str())
        .ok_or_else(ApiError::not_found)?;
    // As RabbitMQ, a single channel also lists its consumers.
    let consumers: Vec<Value> = consumer_list(&http, &caller, None)
        .into_iter()
        .filter(|k| k["channel_details"]["name"] == name.as_str())
        .collect();
    c["consumer_details"] = Value::Array(consumers);
    Ok(respond_one(c, &ListQuery::from_params(&p)))
}

pub(super) fn consumer_list(http: &Http, caller: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let default_timeout = warren_broker::queue_args::DEFAULT_CONSUMER_TIMEOUT_MS;
    http.broker
        .consumers()
        .iter()
        .filter(|c| caller.sees_vhost(http, &c.vhost) && vhost.is_none_or(|v| v == c.vhost))
        .map(|c| {
            let conn = http.broker.connection(&c.connection).ok();
            let peer = conn.as_ref().map(|c| c.info.peer);
            json!({
                "consumer_tag": c.tag,
                "queue": {"name": c.queue, "vhost": c.vhost},
                "channel_details": {
                    "name": c.channel_name,
                    "number": c.channel,
                    "connection_name": c.connection,
                    "node": http.node.name,
                    "peer_host": peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                    "peer_port": peer.map_or(0, |p| p.port()),
                    "user": c.user,
                },
                "ack_required": c.ack_required,
                "exclusive": c.exclusive,
                "prefetch_count": c.prefetch_count,
                "active": c.active,
                "activity_status": if c.active { "up" } else { "waiting" },
                "consumer_timeout": default_timeout,
                "priority": c.priority,
                "arguments": Value::Object(table_to_json(&c.arguments)),
            })
        })
        .collect()
}

pub(super) async fn consumers(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    respond(
        consumer_list(&http, &caller, None),
        &ListQuery::from_params(&p),
        &["consumer_tag"],
        false,
    )
}

pub(super) async fn consumers_in(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    respond(
        consumer_list(&http, &caller, Some(&vhost)),
        &ListQuery::from_params(&p),
        &["consumer_tag"],
        false,
    )
}
