//! Bindings between exchanges and queues or exchanges.

#[allow(unused_imports)]
use super::*;

/// RabbitMQ's `properties_key`: the routing key (URL-quoted, `~` escaped) and, with arguments,
/// `~` and a short hash of them; `~` alone for an empty key without arguments.
pub(super) fn properties_key(routing_key: &str, args: &FieldTable) -> String {
    let mut key = String::new();
    for b in routing_key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => key.push(b as char),
            b' ' => key.push('+'),
            _ => key.push_str(&format!("%{b:02X}")),
        }
    }
    if args.is_empty() {
        if key.is_empty() {
            return "~".into();
        }
        return key;
    }
    let mut raw = bytes::BytesMut::new();
    args.encode(&mut raw);
    // FNV-1a: stable across runs and versions, which is all the key needs.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in raw.iter() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    // 32 bits, as RabbitMQ's `phash2`: six base64url characters.
    let hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(((h >> 32) as u32 ^ h as u32).to_be_bytes());
    format!("{key}~{hash}")
}

pub(super) fn binding_json(vhost: &str, source: &str, b: &Binding) -> Value {
    let (destination, kind) = match &b.destination {
        Destination::Queue(q) => (q.name.as_str().to_owned(), "queue"),
        Destination::Exchange(x) => (x.name.as_str().to_owned(), "exchange"),
    };
    json!({
        "source": source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": kind,
        "routing_key": b.routing_key.as_str(),
        "arguments": Value::Object(table_to_json(&b.arguments)),
        "properties_key": properties_key(b.routing_key.as_str(), &b.arguments),
    })
}

/// Every binding of a vhost, the default exchange's implicit ones first (one per queue).
pub(super) fn vhost_bindings(v: &VHost) -> Vec<Value> {
    let mut out: Vec<Value> = v
        .queues()
        .iter()
        .map(|q| {
            json!({
                "source": "", "vhost": v.name.to_string(), "destination": q.name.as_str(),
                "destination_type": "queue", "routing_key": q.name.as_str(), "arguments": {},
                "properties_key": properties_key(q.name.as_str(), &FieldTable::new()),
            })
        })
        .collect();
    for x in v.exchanges() {
        for b in x.bindings() {
            out.push(binding_json(&v.name, x.name.as_str(), &b));
        }
    }
    out
}

pub(super) const BINDING_KEYS: &[&str] = &[
    "vhost",
    "source",
    "destination_type",
    "destination",
    "routing_key",
    "properties_key",
];

pub(super) async fn bindings(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    let items = visible_vhosts(&http, &caller)
        .iter()
        .flat_map(|v| vhost_bindings(v))
        .collect();
    respond(items, &ListQuery::from_params(&p), BINDING_KEYS, false)
}

pub(super) async fn bindings_in(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    let v = http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    respond(
        vhost_bindings(&v),
        &ListQuery::from_params(&p),
        BINDING_KEYS,
        false,
    )
}

pub(super) fn filter_bindings(
    http: &Http,
    caller: &Caller,
    vhost: &str,
    keep: impl Fn(&Value) -> bool,
) -> ApiResult<Vec<Value>> {
    caller.require_vhost(http, vhost)?;
    let v = http.broker.vhost(vhost).ok_or_else(ApiError::not_found)?;
    Ok(vhost_bindings(&v).into_iter().filter(|b| keep(b)).collect())
}

pub(super) async fn queue_bindings(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    let v = http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    v.queue(&name)?;
    let items = filter_bindings(&http, &caller, &vhost, |b| {
        b["destination_type"] == "queue" && b["destination"] == name.as_str()
    })?;
    respond(items, &ListQuery::from_params(&p), BINDING_KEYS, false)
}

pub(super) async fn exchange_bindings_source(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    let name = exchange_name(&name).to_owned();
    let items = filter_bindings(&http, &caller, &vhost, |b| b["source"] == name.as_str())?;
    respond(items, &ListQuery::from_params(&p), BINDING_KEYS, false)
}

pub(super) async fn exchange_bindings_destination(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    let items = filter_bindings(&http, &caller, &vhost, |b| {
        b["destination_type"] == "exchange" && b["destination"] == name.as_str()
    })?;
    respond(items, &ListQuery::from_params(&p), BINDING_KEYS, false)
}

pub(super) fn destination_kind(kind: &str) -> ApiResult<&'static str> {
    match kind {
        "q" => Ok("queue"),
        "e" => Ok("exchange"),
        _ => Err(ApiError::not_found()),
    }
}

pub(super) async fn bindings_between(
    State(http): St,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    let kind = destination_kind(&kind)?;
    let source = exchange_name(&source).to_owned();
    let items = filter_bindings(&http, &caller, &vhost, |b| {
        b["source"] == source.as_str()
            && b["destination_type"] == kind
            && b["destination"] == destination.as_str()
    })?;
    respond(items, &ListQuery::from_params(&p), BINDING_KEYS, false)
}

pub(super) fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) async fn post_binding(
    State(http): St,
    caller: Caller,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let kind = destination_kind(&kind)?;
    let session = caller.session(&http, &vhost)?;
    let m = body_object(&body)?;
    let key = text_field(&m, "routing_key").unwrap_or("");
    let args = arguments(&m)?;
    let source = exchange_name(&source);
    if source.is_empty() {
        return Err(ApiError::not_authorised("Access refused."));
    }
    if kind == "queue" {
        session.bind_queue(&destination, source, short(key)?, args.clone())?;
    } else {
        session.bind_exchange(&destination, source, short(key)?, args.clone())?;
    }
    let location = format!(
        "{}/{}",
        percent_encode(&destination),
        percent_encode(&properties_key(key, &args))
    );
    let mut headers = HeaderMap::new();
    if let Ok(v) = location.parse() {
        headers.insert(header::LOCATION, v);
    }
    Ok((StatusCode::CREATED, headers).into_response())
}

pub(super) async fn binding(
    State(http): St,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Response> {
    let kind = destination_kind(&kind)?;
    let source = exchange_name(&source).to_owned();
    let found = filter_bindings(&http, &caller, &vhost, |b| {
        b["source"] == source.as_str()
            && b["destination_type"] == kind
            && b["destination"] == destination.as_str()
            && b["properties_key"] == props.as_str()
    })?;
    found
        .into_iter()
        .next()
        .map(|b| Json(b).into_response())
        .ok_or_else(ApiError::not_found)
}

pub(super) async fn delete_binding(
    State(http): St,
    caller: Caller,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Response> {
    let kind = destination_kind(&kind)?;
    let session = caller.session(&http, &vhost)?;
    let source = exchange_name(&source);
    let x = session.vhost().exchange(source)?;
    let b = x
        .bindings()
        .into_iter()
        .find(|b| {
            let (name, k) = match &b.destination {
                Destination::Queue(q) => (q.name.as_str(), "queue"),
                Destination::Exchange(e) => (e.name.as_str(), "exchange"),
            };
            name == destination
                && k == kind
                && properties_key(b.routing_key.as_str(), &b.arguments) == props
        })
        .ok_or_else(ApiError::not_found)?;
    if kind == "queue" {
        session.unbind_queue(&destination, source, b.routing_key, b.arguments)?;
    } else {
        session.unbind_exchange(&destination, source, b.routing_key, b.arguments)?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
