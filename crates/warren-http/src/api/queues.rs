//! Queues: list (paged on a light view), declare, delete, purge, get.

#[allow(unused_imports)]
use super::*;

pub(super) fn queue_json(http: &Http, vhost: &str, q: &Queue) -> Value {
    let s = q.snapshot();
    let key = format!("queue/{vhost}/{}", q.name);
    let gauges = http.rates.get(&format!("{key}/gauges"), 3);
    let messages = s.messages_ready + s.messages_unacknowledged;
    let mut o = json!({
        "name": q.name.as_str(),
        "vhost": vhost,
        "type": q.config.queue_type.as_str(),
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.is_exclusive(),
        "arguments": Value::Object(table_to_json(&q.arguments)),
        "node": http.node.name,
        "state": "running",
        "policy": s.policy.clone().map_or(Value::Null, Value::from),
        "operator_policy": s.operator_policy.clone().map_or(Value::Null, Value::from),
        "effective_policy_definition": Value::Object(s.policy_definition.clone()),
        "consumers": s.consumers,
        "consumer_capacity": if s.consumers > 0 { 1.0 } else { 0.0 },
        "consumer_utilisation": if s.consumers > 0 { 1.0 } else { 0.0 },
        "exclusive_consumer_tag": Value::Null,
        "single_active_consumer_tag": Value::Null,
        "head_message_timestamp": Value::Null,
        "recoverable_slaves": Value::Null,
        "memory": 0,
        "messages": messages,
        "messages_details": details(gauges[0]),
        "messages_ready": s.messages_ready,
        "messages_ready_details": details(gauges[1]),
        "messages_unacknowledged": s.messages_unacknowledged,
        "messages_unacknowledged_details": details(gauges[2]),
        "messages_ram": s.messages_ready - s.messages_paged_out,
        "messages_ready_ram": s.messages_ready - s.messages_paged_out,
        "messages_unacknowledged_ram": s.messages_unacknowledged,
        "messages_paged_out": s.messages_paged_out,
        "messages_persistent": 0,
        "message_bytes": s.message_bytes_ready,
        "message_bytes_ready": s.message_bytes_ready,
        "message_bytes_unacknowledged": 0,
        "message_bytes_ram": s.message_bytes_ready,
        "message_bytes_persistent": 0,
        "message_bytes_paged_out": 0,
    });
    let vals = values(&s.stats, QUEUE_FIELDS);
    let rates = http.rates.get(&key, vals.len());
    if let Some(ms) = message_stats(QUEUE_FIELDS, &vals, &rates, None) {
        o["message_stats"] = ms;
    }
    o
}

pub(super) fn queue_list(http: &Http, vhosts: &[Arc<VHost>]) -> Vec<Value> {
    vhosts
        .iter()
        .flat_map(|v| {
            v.queues()
                .iter()
                .map(|q| queue_json(http, &v.name, q))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Queue fields a page can be sorted on without building whole queue objects.
pub(super) const QUEUE_VIEW: &[&str] = &[
    "name",
    "vhost",
    "type",
    "durable",
    "auto_delete",
    "exclusive",
    "messages",
    "messages_ready",
    "messages_unacknowledged",
    "consumers",
];

/// A queue list: on a page, sorted and filtered on a small view of each queue (cheap at
/// 10,000 queues), with whole objects built for the page's queues only.
pub(super) fn respond_queues(
    http: &Http,
    vhosts: &[Arc<VHost>],
    q: &ListQuery,
) -> ApiResult<Response> {
    let keys = ["vhost", "name"];
    let sort_keys = crate::list::sort_keys(q, &keys);
    let cheap = sort_keys.iter().all(|k| QUEUE_VIEW.contains(k));
    if !(crate::list::paging(q) && cheap) {
        return respond(queue_list(http, vhosts), q, &keys, true);
    }
    let by_name_only = sort_keys.iter().all(|k| *k == "name" || *k == "vhost");
    let mut rows = Vec::new();
    for v in vhosts {
        for queue in v.queues() {
            let mut view = json!({"name": queue.name.as_str(), "vhost": v.name.to_string()});
            if !by_name_only {
                let s = queue.snapshot();
                view["type"] = Value::from(queue.config.queue_type.as_str());
                view["durable"] = Value::from(queue.durable);
                view["auto_delete"] = Value::from(queue.auto_delete);
                view["exclusive"] = Value::from(queue.is_exclusive());
                view["messages"] = Value::from(s.messages_ready + s.messages_unacknowledged);
                view["messages_ready"] = Value::from(s.messages_ready);
                view["messages_unacknowledged"] = Value::from(s.messages_unacknowledged);
                view["consumers"] = Value::from(s.consumers);
            }
            rows.push((view, (v.name.clone(), queue)));
        }
    }
    crate::list::respond_rows(rows, q, &keys, true, |_, (vhost, queue)| {
        queue_json(http, &vhost, &queue)
    })
}

/// `?disable_stats=true`: a queue without its statistics, as RabbitMQ lists it then (with
/// `enable_queue_totals=true`, its message counts too).
pub(super) fn queue_json_plain(http: &Http, vhost: &str, q: &Queue, totals: bool) -> Value {
    let mut o = json!({
        "name": q.name.as_str(),
        "vhost": vhost,
        "type": q.config.queue_type.as_str(),
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.is_exclusive(),
        "arguments": Value::Object(table_to_json(&q.arguments)),
        "node": http.node.name,
        "state": "running",
    });
    let s = q.snapshot();
    o["policy"] = s.policy.clone().map_or(Value::Null, Value::from);
    if totals {
        o["messages"] = Value::from(s.messages_ready + s.messages_unacknowledged);
        o["messages_ready"] = Value::from(s.messages_ready);
        o["messages_unacknowledged"] = Value::from(s.messages_unacknowledged);
    }
    o
}

/// The queue list, honouring `disable_stats` / `enable_queue_totals`.
pub(super) fn queues_answer(
    http: &Http,
    vhosts: &[Arc<VHost>],
    p: &HashMap<String, String>,
) -> ApiResult<Response> {
    let q = ListQuery::from_params(p);
    if p.get("disable_stats").is_some_and(|v| v == "true") {
        let totals = p.get("enable_queue_totals").is_some_and(|v| v == "true");
        let items = vhosts
            .iter()
            .flat_map(|v| {
                v.queues()
                    .iter()
                    .map(|queue| queue_json_plain(http, &v.name, queue, totals))
                    .collect::<Vec<_>>()
            })
            .collect();
        return respond(items, &q, &["vhost", "name"], true);
    }
    respond_queues(http, vhosts, &q)
}

pub(super) async fn queues(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    queues_answer(&http, &visible_vhosts(&http, &caller), &p)
}

pub(super) async fn queues_in(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    let v = http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    queues_answer(&http, &[v], &p)
}

pub(super) async fn queue(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    let v = http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let q = v.queue(&name)?;
    let mut o = queue_json(&http, &vhost, &q);
    // As RabbitMQ, a single queue also lists its consumers.
    let consumers: Vec<Value> = consumer_list(&http, &caller, Some(&vhost))
        .into_iter()
        .filter(|c| c["queue"]["name"] == name.as_str())
        .collect();
    o["consumer_details"] = Value::Array(consumers);
    Ok(respond_one(o, &ListQuery::from_params(&p)))
}

pub(super) async fn put_queue(
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
    let existed = session.vhost().queue(&name).is_ok();
    let mut args = arguments(&m)?;
    // Clients may give the type beside the arguments (rabbit-hole, the web UI).
    if let Some(t) = text_field(&m, "type") {
        if args.get("x-queue-type").is_none() {
            args.insert(
                ShortString::from_static("x-queue-type"),
                FieldValue::from(t),
            );
        }
    }
    session.declare_queue(QueueDeclare {
        name: short(&name)?,
        passive: false,
        durable: flag(&m, "durable", true)?,
        exclusive: false,
        auto_delete: flag(&m, "auto_delete", false)?,
        arguments: args,
    })?;
    Ok(created_or_updated(!existed))
}

pub(super) async fn delete_queue(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    let session = caller.session(&http, &vhost)?;
    session.vhost().queue(&name)?;
    let flag_of = |k: &str| p.get(k).is_some_and(|v| v == "true");
    session.delete_queue(&name, flag_of("if-unused"), flag_of("if-empty"))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn purge(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let session = caller.session(&http, &vhost)?;
    session.purge_queue(&name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) fn properties_json(raw: &bytes::Bytes) -> Value {
    let Ok(p) = BasicProperties::decode(raw.clone()) else {
        return json!([]);
    };
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    let s = |v: &Option<ShortString>| v.as_ref().map(|s| Value::from(s.as_str()));
    put("content_type", s(&p.content_type));
    put("content_encoding", s(&p.content_encoding));
    put(
        "headers",
        p.headers.as_ref().map(|h| Value::Object(table_to_json(h))),
    );
    put("delivery_mode", p.delivery_mode.map(Value::from));
    put("priority", p.priority.map(Value::from));
    put("correlation_id", s(&p.correlation_id));
    put("reply_to", s(&p.reply_to));
    put("expiration", s(&p.expiration));
    put("message_id", s(&p.message_id));
    put("timestamp", p.timestamp.map(Value::from));
    put("type", s(&p.kind));
    put("user_id", s(&p.user_id));
    put("app_id", s(&p.app_id));
    put("cluster_id", s(&p.cluster_id));
    if m.is_empty() {
        json!([])
    } else {
        Value::Object(m)
    }
}

pub(super) async fn get_messages(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let session = caller.session(&http, &vhost)?;
    let m = body_object(&body)?;
    let count = m
        .get("count")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .ok_or_else(|| ApiError::bad_request("[{key_missing,count}]"))?;
    let ackmode = text_field(&m, "ackmode")
        .ok_or_else(|| ApiError::bad_request("[{key_missing,ackmode}]"))?;
    let (requeue, reject) = match ackmode {
        "ack_requeue_true" => (true, false),
        "ack_requeue_false" => (false, false),
        "reject_requeue_true" => (true, true),
        "reject_requeue_false" => (false, true),
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let encoding = text_field(&m, "encoding").unwrap_or("auto");
    let truncate = m
        .get("truncate")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()));
    let outbox = Arc::new(Collect::default());
    let channel = Arc::new(warren_broker::Channel::new(0, 0, outbox.clone()));
    let mut out = Vec::new();
    for _ in 0..count {
        if !session.get(&channel, &name, false)? {
            break;
        }
    }
    for item in outbox.take() {
        if let warren_broker::Outbound::GetOk {
            redelivered,
            message_count,
            message,
            ..
        } = item
        {
            let full = &message.body;
            let shown = match truncate {
                Some(n) if (n as usize) < full.len() => &full[..n as usize],
                _ => &full[..],
            };
            let (payload, payload_encoding) = match (encoding, std::str::from_utf8(shown)) {
                ("auto", Ok(text)) => (text.to_owned(), "string"),
                _ => (
                    base64::engine::general_purpose::STANDARD.encode(shown),
                    "base64",
                ),
            };
            out.push(json!({
                "payload_bytes": full.len(),
                "redelivered": redelivered,
                "exchange": message.exchange.as_str(),
                "routing_key": message.routing_key.as_str(),
                "message_count": message_count,
                "properties": properties_json(&message.raw_properties),
                "payload": payload,
                "payload_encoding": payload_encoding,
            }));
        }
    }
    // Settle what was taken, as the ack mode says: requeued (redelivered, in place),
    // acked, or rejected (dead-lettered when the queue has a dead-letter exchange).
    if !out.is_empty() {
        if requeue {
            channel.nack(0, true, true)?;
        } else if reject {
            channel.nack(0, true, false)?;
        } else {
            channel.ack(0, true)?;
        }
    }
    channel.close();
    Ok(Json(Value::Array(out)).into_response())
}

/// The deliveries of a `get` over HTTP, collected instead of written to a socket.
#[derive(Default)]
pub(super) struct Collect(parking_lot::Mutex<Vec<warren_broker::Outbound>>);

impl Collect {
    fn take(&self) -> Vec<warren_broker::Outbound> {
        std::mem::take(&mut *self.0.lock())
    }
}

impl warren_broker::Outbox for Collect {
    fn push(&self, item: warren_broker::Outbound) {
        self.0.lock().push(item);
    }
    fn is_congested(&self) -> bool {
        false
    }
}
