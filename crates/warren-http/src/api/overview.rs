//! Overview, nodes, whoami: what the node is and what it holds.

#[allow(unused_imports)]
use super::*;

pub(super) fn listeners(http: &Http) -> Value {
    let out = http
        .node
        .listeners()
        .into_iter()
        .map(|(protocol, a)| {
            json!({
                "node": http.node.name,
                "protocol": protocol,
                "ip_address": a.ip().to_string(),
                "port": a.port(),
                "socket_opts": [],
            })
        })
        .collect();
    Value::Array(out)
}

/// Ready and unacked messages over the queues the caller sees.
pub(super) fn queue_totals(http: &Http, caller: &Caller) -> (u64, u64) {
    let mut ready = 0;
    let mut unacked = 0;
    for v in http.broker.vhosts() {
        if !caller.sees_vhost(http, &v.name) {
            continue;
        }
        for q in v.queues() {
            let s = q.snapshot();
            ready += s.messages_ready;
            unacked += s.messages_unacknowledged;
        }
    }
    (ready, unacked)
}

pub(super) const OVERVIEW_KEY: &str = "overview";
pub(super) const TOTALS_KEY: &str = "overview/queue_totals";

pub(super) async fn overview(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    let b = &http.broker;
    let totals = b.totals(None);
    let (ready, unacked) = queue_totals(&http, &caller);
    let vhosts: Vec<Arc<VHost>> = b
        .vhosts()
        .into_iter()
        .filter(|v| caller.sees_vhost(&http, &v.name))
        .collect();
    let queues: usize = vhosts.iter().map(|v| v.queues().len()).sum();
    let exchanges: usize = vhosts.iter().map(|v| v.exchanges().len()).sum();
    let connections = b.connections();
    let churn = b.churn();
    let [messages_details, ready_details, unacked_details] =
        gauge_details(&http, TOTALS_KEY, Window::from_params(&p, "lengths"));
    let mut o = json!({
        "management_version": warren_broker::definitions::RABBIT_VERSION,
        "rates_mode": "basic",
        "exchange_types": exchange_types(),
        "product_version": env!("CARGO_PKG_VERSION"),
        "product_name": "Warren",
        "rabbitmq_version": warren_broker::definitions::RABBIT_VERSION,
        "cluster_name": http.node.cluster_name,
        "erlang_version": "none (Warren is written in Rust)",
        "erlang_full_version": "none (Warren is written in Rust)",
        "release_series_support_status": "supported",
        "disable_stats": false,
        "enable_queue_totals": false,
        "statistics_db_event_queue": 0,
        "node": http.node.name,
        "churn_rates": {
            "connection_created": churn.connections_opened,
            "connection_closed": churn.connections_closed,
            "channel_created": churn.channels_opened,
            "channel_closed": churn.channels_closed,
            "queue_declared": churn.queues_declared,
            "queue_created": churn.queues_created,
            "queue_deleted": churn.queues_deleted,
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_details": messages_details,
            "messages_ready": ready,
            "messages_ready_details": ready_details,
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": unacked_details,
        },
        "object_totals": {
            "channels": b.channels().len(),
            "connections": connections.len(),
            "consumers": b.consumers().len(),
            "exchanges": exchanges,
            "queues": queues,
        },
        "listeners": listeners(&http),
        "contexts": [{
            "node": http.node.name,
            "description": "RabbitMQ Management",
            "path": "/",
            "port": http.node.management_port().to_string(),
        }],
    });
    if let (Some(ms), Value::Object(m)) = (
        windowed_message_stats(&http, OVERVIEW_KEY, &totals.messages, &p),
        &mut o,
    ) {
        m.insert("message_stats".into(), ms);
    }
    Ok(respond_one(o, &ListQuery::from_params(&p)))
}

/// The `*_details` of the three queue-length gauges kept under `key`, with `samples` when
/// the request names a `lengths_age`.
pub(super) fn gauge_details(http: &Http, key: &str, window: Option<Window>) -> [Value; 3] {
    let rates = http.rates.get(key, 3);
    let samples = window.map(|w| http.rates.samples(key, 3, w));
    std::array::from_fn(|i| details_with(rates[i], samples.as_ref().map(|s| s[i].as_slice())))
}

/// `message_stats` of an aggregate (the overview, a vhost), with `samples` when the request
/// names a `msg_rates_age`.
pub(super) fn windowed_message_stats(
    http: &Http,
    key: &str,
    stats: &warren_broker::stats::MessageStats,
    p: &HashMap<String, String>,
) -> Option<Value> {
    let vals = values(stats, CHANNEL_FIELDS);
    let rates = http.rates.get(key, vals.len());
    let history =
        Window::from_params(p, "msg_rates").map(|w| http.rates.samples(key, vals.len(), w));
    message_stats(CHANNEL_FIELDS, &vals, &rates, history.as_deref())
}

pub(super) fn exchange_types() -> Value {
    json!([
        {"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": true},
        {"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": true},
        {"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": true},
        {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": true},
        {"name": "x-delayed-message", "description": "Delayed Message Exchange", "enabled": true},
    ])
}

pub(super) async fn cluster_name(State(http): St, _c: Caller) -> Json<Value> {
    Json(json!({ "name": http.node.cluster_name }))
}

pub(super) fn node_json(http: &Http) -> Value {
    let (mem_alarm, disk_alarm) = http.alarms.raised();
    let uptime = http.started.elapsed().as_millis().min(u128::from(u32::MAX)) as u64;
    let mut node = json!({
        "name": http.node.name,
        "type": "disc",
        "running": true,
        "being_drained": false,
        "partitions": [],
        "os_pid": std::process::id().to_string(),
        "fd_total": fd_limit(),
        "fd_used": open_fds(),
        "sockets_total": fd_limit(),
        "sockets_used": http.broker.connections().len(),
        "mem_limit": http.node.memory_limit,
        "mem_used": resident_memory(),
        "mem_alarm": mem_alarm,
        "disk_free_limit": http.node.disk_free_limit,
        "disk_free_alarm": disk_alarm,
        "proc_total": 1048576,
        "proc_used": 0,
        "rates_mode": "basic",
        "uptime": uptime,
        "run_queue": 0,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "exchange_types": exchange_types(),
        "auth_mechanisms": [
            {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": true},
            {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": true},
        ],
        "applications": [{"name": "rabbit", "description": "Warren", "version": warren_broker::definitions::RABBIT_VERSION}],
        "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
        "rabbitmq_version": warren_broker::definitions::RABBIT_VERSION,
        "net_ticktime": 60,
    });
    if let (Some(free), Value::Object(o)) = (http.alarms.disk_free(), &mut node) {
        o.insert("disk_free".into(), json!(free));
    }
    node
}

pub(super) async fn nodes(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_monitor()?;
    respond(
        vec![node_json(&http)],
        &ListQuery::from_params(&p),
        &["name"],
        false,
    )
}

pub(super) async fn node(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_monitor()?;
    if name != http.node.name {
        return Err(ApiError::not_found());
    }
    Ok(respond_one(node_json(&http), &ListQuery::from_params(&p)))
}

/// RabbitMQ's memory breakdown, in the categories rabbitmqadmin v2 reads. Warren can say
/// what its queues hold in memory; the rest of the resident set is reported as
/// `other_proc`, and the Erlang-only categories as 0.
pub(super) async fn node_memory(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_monitor()?;
    if name != http.node.name {
        return Err(ApiError::not_found());
    }
    let rss = resident_memory();
    let mut queues = 0u64;
    for v in http.broker.vhosts() {
        for q in v.queues() {
            queues += q.snapshot().message_bytes_ready;
        }
    }
    let queues = queues.min(rss);
    let mut m = Map::new();
    for k in [
        "connection_readers",
        "connection_writers",
        "connection_channels",
        "connection_other",
        "quorum_queue_procs",
        "stream_queue_procs",
        "stream_queue_replica_reader_procs",
        "stream_queue_coordinator_procs",
        "plugins",
        "metadata_store",
        "metrics",
        "mgmt_db",
        "mnesia",
        "quorum_ets",
        "metadata_store_ets",
        "other_ets",
        "binary",
        "msg_index",
        "code",
        "atom",
        "other_system",
        "allocated_unused",
        "reserved_unallocated",
    ] {
        m.insert(k.into(), json!(0));
    }
    m.insert("queue_procs".into(), json!(queues));
    m.insert("other_proc".into(), json!(rss - queues));
    m.insert("strategy".into(), json!("rss"));
    m.insert(
        "total".into(),
        json!({"rss": rss, "allocated": rss, "erlang": rss}),
    );
    Ok(Json(json!({ "memory": m })).into_response())
}

pub(super) async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"name": caller.user.name, "tags": caller.user.tags}))
}
