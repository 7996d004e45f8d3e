//! Exchanges: list, declare, delete, publish.

#[allow(unused_imports)]
use super::*;

pub(super) fn exchange_json(http: &Http, vhost: &str, x: &Arc<warren_broker::Exchange>) -> Value {
    let s = http.broker.exchange_stats(x);
    let mut o = json!({
        "name": x.name.as_str(),
        "vhost": vhost,
        "type": x.kind.as_str(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": Value::Object(table_to_json(&x.arguments)),
        "user_who_performed_action": "",
    });
    // As RabbitMQ: the key is there only when a policy applies.
    if let Some(p) = x.policy() {
        o["policy"] = Value::from(p);
    }
    if s.publish_in > 0 || s.publish_out > 0 {
        let r = http.rates.get(&format!("exchange/{vhost}/{}", x.name), 2);
        o["message_stats"] = json!({
            "publish_in": s.publish_in,
            "publish_in_details": details(r[0]),
            "publish_out": s.publish_out,
            "publish_out_details": details(r[1]),
        });
    }
    o
}

pub(super) fn visible_vhosts(http: &Http, caller: &Caller) -> Vec<Arc<VHost>> {
    http.broker
        .vhosts()
        .into_iter()
        .filter(|v| caller.sees_vhost(http, &v.name))
        .collect()
}

pub(super) fn exchange_list(http: &Http, vhosts: &[Arc<VHost>]) -> Vec<Value> {
    vhosts
        .iter()
        .flat_map(|v| {
            v.exchanges()
                .iter()
                .map(|x| exchange_json(http, &v.name, x))
                .collect::<Vec<_>>()
        })
        .collect()
}

pub(super) async fn exchanges(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    let items = exchange_list(&http, &visible_vhosts(&http, &caller));
    respond(items, &ListQuery::from_params(&p), &["vhost", "name"], true)
}

pub(super) async fn exchanges_in(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    let v = http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    respond(
        exchange_list(&http, &[v]),
        &ListQuery::from_params(&p),
        &["vhost", "name"],
        true,
    )
}

pub(super) async fn exchange(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    let v = http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let x = v.exchange(exchange_name(&name))?;
    Ok(respond_one(
        exchange_json(&http, &vhost, &x),
        &ListQuery::from_params(&p),
    ))
}

pub(super) async fn put_exchange(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    if http.broker.vhost(&vhost).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    let session = caller.session(&http, &vhost)?;
    let m = body_object(&body)?;
    let kind = text_field(&m, "type").unwrap_or("direct").to_owned();
    let existed = session.vhost().exchange(&name).is_ok();
    session.declare_exchange(ExchangeDeclare {
        name: short(&name)?,
        kind,
        passive: false,
        durable: flag(&m, "durable", true)?,
        auto_delete: flag(&m, "auto_delete", false)?,
        internal: flag(&m, "internal", false)?,
        arguments: arguments(&m)?,
    })?;
    Ok(created_or_updated(!existed))
}

pub(super) async fn delete_exchange(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    let session = caller.session(&http, &vhost)?;
    session.vhost().exchange(exchange_name(&name))?;
    let if_unused = p.get("if-unused").is_some_and(|v| v == "true");
    session.delete_exchange(exchange_name(&name), if_unused)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Builds the raw content header properties of a message published over HTTP.
pub(super) fn properties_of(m: &Map<String, Value>) -> ApiResult<BasicProperties> {
    let Some(Value::Object(p)) = m.get("properties") else {
        return Ok(BasicProperties::default());
    };
    let s = |k: &str| -> ApiResult<Option<ShortString>> {
        match p.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(v)) => Ok(Some(short(v)?)),
            Some(other) => Ok(Some(short(&other.to_string())?)),
        }
    };
    let n = |k: &str| {
        p.get(k)
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
    };
    Ok(BasicProperties {
        content_type: s("content_type")?,
        content_encoding: s("content_encoding")?,
        headers: match p.get("headers") {
            Some(Value::Object(h)) => Some(json_to_table(h)?),
            _ => None,
        },
        delivery_mode: n("delivery_mode").map(|v| v as u8),
        priority: n("priority").map(|v| v as u8),
        correlation_id: s("correlation_id")?,
        reply_to: s("reply_to")?,
        expiration: s("expiration")?,
        message_id: s("message_id")?,
        timestamp: n("timestamp"),
        kind: s("type")?,
        user_id: s("user_id")?,
        app_id: s("app_id")?,
        cluster_id: s("cluster_id")?,
    })
}

pub(super) async fn publish(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let session = caller.session(&http, &vhost)?;
    let m = body_object(&body)?;
    if !m.contains_key("properties") {
        return Err(ApiError::bad_request("[{key_missing,properties}]"));
    }
    let payload = text_field(&m, "payload").unwrap_or("");
    let body = match text_field(&m, "payload_encoding").unwrap_or("string") {
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .map_err(|_| ApiError::bad_request("payload is not base64"))?,
        _ => payload.as_bytes().to_vec(),
    };
    let exchange = exchange_name(&name);
    if session.vhost().exchange(exchange).is_err() {
        return Err(ApiError::bad_request(format!(
            "404 NOT_FOUND - no exchange '{exchange}' in vhost '{vhost}'"
        )));
    }
    let props = properties_of(&m)?;
    let published = session.publish(
        &mut Publisher::direct(),
        Publish {
            exchange: short(exchange)?,
            routing_key: short(text_field(&m, "routing_key").unwrap_or(""))?,
            mandatory: false,
            properties: props.to_raw(),
            body: bytes::Bytes::from(body),
        },
    )?;
    Ok(Json(json!({"routed": !published.routed.is_empty()})).into_response())
}
