//! Definitions export and import; aliveness and health checks.

#[allow(unused_imports)]
use super::*;

pub(super) async fn definitions(State(http): St, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(Json(Definitions::export(&http.broker, None)).into_response())
}

pub(super) async fn vhost_definitions(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if http.broker.vhost(&vhost).is_none() {
        return Err(ApiError::bad_request("vhost_not_found"));
    }
    Ok(Json(Definitions::export(&http.broker, Some(&vhost))).into_response())
}

pub(super) fn import(http: &Http, body: &[u8], vhost: Option<&str>) -> ApiResult<Response> {
    let mut v: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::bad_request("failed_to_parse_json"))?;
    if let (Some(vh), Value::Object(m)) = (vhost, &mut v) {
        // A per-vhost file names no vhost in its entries: they all go to this one.
        for key in ["queues", "exchanges", "bindings", "policies", "parameters"] {
            if let Some(Value::Array(items)) = m.get_mut(key) {
                for item in items {
                    if let Value::Object(o) = item {
                        o.insert("vhost".into(), Value::from(vh));
                    }
                }
            }
        }
        m.remove("users");
        m.remove("vhosts");
        m.remove("permissions");
    }
    let defs = Definitions::parse(&v.to_string())?;
    defs.apply(&http.broker).map_err(|e| match e {
        warren_broker::BrokerError::Storage(m) | warren_broker::BrokerError::DiskFull(m) => {
            ApiError::internal(m)
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn post_definitions(
    State(http): St,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    import(&http, &body, None)
}

pub(super) async fn post_vhost_definitions(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if http.broker.vhost(&vhost).is_none() {
        return Err(ApiError::bad_request("vhost_not_found"));
    }
    import(&http, &body, Some(&vhost))
}

/// RabbitMQ's aliveness test: declare `aliveness-test`, publish to it and get the message.
pub(super) async fn aliveness(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    let session = caller.session(&http, &vhost)?;
    session.declare_queue(QueueDeclare {
        name: ShortString::from_static("aliveness-test"),
        durable: false,
        ..QueueDeclare::default()
    })?;
    session.publish(
        &mut Publisher::direct(),
        Publish {
            exchange: ShortString::from_static(""),
            routing_key: ShortString::from_static("aliveness-test"),
            mandatory: false,
            properties: BasicProperties::default().to_raw(),
            body: bytes::Bytes::from_static(b"test_message"),
        },
    )?;
    let outbox = Arc::new(Collect::default());
    let channel = Arc::new(warren_broker::Channel::new(0, 0, outbox));
    let got = session.get(&channel, "aliveness-test", true)?;
    channel.close();
    if got {
        Ok(Json(json!({"status": "ok"})).into_response())
    } else {
        Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": "the test message did not come back"})),
        )
            .into_response())
    }
}

pub(super) async fn health_ok(_c: Caller) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn health_alarms(State(http): St, _c: Caller) -> Response {
    let (mem, disk) = http.alarms.raised();
    let mut alarms = Vec::new();
    if mem {
        alarms.push(json!({"node": http.node.name, "resource": "memory"}));
    }
    if disk {
        alarms.push(json!({"node": http.node.name, "resource": "disk"}));
    }
    if alarms.is_empty() {
        Json(json!({"status": "ok"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": "resource alarm(s) in effect in the cluster", "alarms": alarms})),
        )
            .into_response()
    }
}

pub(super) async fn health_port(State(http): St, _c: Caller, Path(port): Path<u16>) -> Response {
    let listening = http.node.listeners().iter().any(|(_, a)| a.port() == port);
    if listening {
        Json(json!({"status": "ok", "port": port})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": "No active listener", "missing": port})),
        )
            .into_response()
    }
}

pub(super) async fn health_protocol(
    State(http): St,
    _c: Caller,
    Path(protocol): Path<String>,
) -> Response {
    let have: Vec<&str> = http.node.listeners().iter().map(|(p, _)| *p).collect();
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp0-9-1" | "amqp" => "amqp",
        "amqps" | "amqp/ssl" => "amqp/ssl",
        "http" | "management" => "http",
        other => other,
    };
    if have.contains(&wanted) {
        Json(json!({"status": "ok", "protocol": protocol})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": "No active listener", "missing": protocol, "protocols": have})),
        )
            .into_response()
    }
}
