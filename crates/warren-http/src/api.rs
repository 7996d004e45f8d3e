//! The `/api` endpoints, in RabbitMQ's shapes (see `docs/dev/management-api.md`). Handlers
//! read snapshots and counters and call the broker's operations; none of them touches the
//! message path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};
use warren_broker::definitions::{field_to_json, json_to_table, table_to_json, Definitions};
use warren_broker::{
    Binding, Destination, ExchangeDeclare, HashAlgorithm, PasswordHash, Permission, Publish,
    Publisher, Queue, QueueDeclare, VHost,
};
use warren_codec::{BasicProperties, FieldTable, FieldValue, ShortString};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::list::{respond, respond_one, ListQuery};
use crate::rates::{details, message_stats, values, CHANNEL_FIELDS, QUEUE_FIELDS};
use crate::Http;

type St = State<Arc<Http>>;
type Params = Query<HashMap<String, String>>;

pub fn router() -> Router<Arc<Http>> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/cluster-name", get(cluster_name))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{node}", get(node))
        .route("/api/whoami", get(whoami))
        .route("/api/extensions", get(empty_list))
        .route("/api/feature-flags", get(empty_list))
        .route("/api/deprecated-features", get(empty_list))
        .route("/api/deprecated-features/used", get(empty_list))
        .route("/api/vhosts", get(vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route("/api/users", get(users))
        .route(
            "/api/users/{user}",
            get(user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route("/api/permissions", get(permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchange).put(put_exchange).delete(delete_exchange),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(exchange_bindings_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(exchange_bindings_destination),
        )
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue).put(put_queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge),
        )
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(bindings_between).post(post_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(binding).delete(delete_binding),
        )
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{name}",
            get(connection).delete(delete_connection),
        )
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route("/api/vhosts/{vhost}/connections", get(vhost_connections))
        .route("/api/channels", get(channels))
        .route("/api/channels/{name}", get(channel))
        .route("/api/vhosts/{vhost}/channels", get(vhost_channels))
        .route("/api/consumers", get(consumers))
        .route("/api/consumers/{vhost}", get(consumers_in))
        .route("/api/definitions", get(definitions).post(post_definitions))
        .route(
            "/api/definitions/{vhost}",
            get(vhost_definitions).post(post_vhost_definitions),
        )
        .route("/api/policies", get(policies))
        .route("/api/policies/{vhost}", get(policies_in))
        .route(
            "/api/policies/{vhost}/{name}",
            get(policy).put(put_policy).delete(delete_policy),
        )
        .route("/api/operator-policies", get(operator_policies))
        .route("/api/operator-policies/{vhost}", get(operator_policies_in))
        .route(
            "/api/operator-policies/{vhost}/{name}",
            get(operator_policy)
                .put(put_operator_policy)
                .delete(delete_operator_policy),
        )
        .route("/api/vhost-limits", get(vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(vhost_limits_of))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(put_vhost_limit).delete(delete_vhost_limit),
        )
        .route("/api/user-limits", get(user_limits))
        .route("/api/user-limits/{user}", get(user_limits_of))
        .route(
            "/api/user-limits/{user}/{name}",
            axum::routing::put(put_user_limit).delete(delete_user_limit),
        )
        .route("/api/aliveness-test/{vhost}", get(aliveness))
        .route("/api/health/checks/alarms", get(health_alarms))
        .route("/api/health/checks/local-alarms", get(health_alarms))
        .route("/api/health/checks/virtual-hosts", get(health_ok))
        .route("/api/health/checks/node-is-quorum-critical", get(health_ok))
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(health_ok),
        )
        .route("/api/health/checks/port-listener/{port}", get(health_port))
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(health_protocol),
        )
        .route(
            "/api/health/checks/certificate-expiration/{within}/{unit}",
            get(health_ok),
        )
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn empty_list(_c: Caller) -> Json<Value> {
    Json(json!([]))
}

/// `amq.default` (and the empty name) mean the default exchange in paths.
fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

fn short(name: &str) -> ApiResult<ShortString> {
    ShortString::try_from(name).map_err(|_| {
        ApiError::bad_request(format!(
            "queue should be less than 255 bytes, actually was {}\n",
            name.len()
        ))
    })
}

/// A request body as a JSON object (empty means `{}`), with RabbitMQ's texts for bad ones.
fn body_object(body: &[u8]) -> ApiResult<Map<String, Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(Value::String(_)) => Err(ApiError::bad_request(
            "invalid payload: the request body JSON-decoded to a string. Is the input \
             doubly-JSON-encoded?",
        )),
        _ => Err(ApiError::bad_request("not_json")),
    }
}

/// A boolean field that clients send as `true` or `"true"`.
fn flag(m: &Map<String, Value>, key: &str, default: bool) -> ApiResult<bool> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "[\"not_boolean\",{}]",
            other
        ))),
    }
}

fn text_field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// `arguments` of a body as a field table (`null` values are refused, as in RabbitMQ).
fn arguments(m: &Map<String, Value>) -> ApiResult<FieldTable> {
    match m.get("arguments") {
        None | Some(Value::Null) => Ok(FieldTable::new()),
        Some(Value::Object(o)) => {
            if o.values().any(Value::is_null) {
                return Err(ApiError::bad_request("null_not_allowed"));
            }
            Ok(json_to_table(o)?)
        }
        Some(Value::Array(a)) if a.is_empty() => Ok(FieldTable::new()),
        Some(_) => Err(ApiError::bad_request("arguments must be an object")),
    }
}

fn created_or_updated(created: bool) -> Response {
    if created {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

fn tags_of(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Overview, nodes, whoami

fn listeners(http: &Http) -> Value {
    let mut out = Vec::new();
    let mut add = |protocol: &str, addr: Option<std::net::SocketAddr>| {
        if let Some(a) = addr {
            out.push(json!({
                "node": http.node.name,
                "protocol": protocol,
                "ip_address": a.ip().to_string(),
                "port": a.port(),
                "socket_opts": [],
            }));
        }
    };
    for a in &http.node.amqp_listeners {
        add("amqp", Some(*a));
    }
    add("http", http.node.management_listener);
    add("http/prometheus", http.node.prometheus_listener);
    Value::Array(out)
}

/// Ready and unacked messages over the queues the caller sees.
fn queue_totals(http: &Http, caller: &Caller) -> (u64, u64) {
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

const OVERVIEW_KEY: &str = "overview";
const TOTALS_KEY: &str = "overview/queue_totals";

async fn overview(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
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
    let gauge_rates = http.rates.get(TOTALS_KEY, 3);
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
            "messages_details": details(gauge_rates[0]),
            "messages_ready": ready,
            "messages_ready_details": details(gauge_rates[1]),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": details(gauge_rates[2]),
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
            "port": http.node.management_listener.map_or(0, |a| a.port()).to_string(),
        }],
    });
    let vals = values(&totals.messages, CHANNEL_FIELDS);
    let rates = http.rates.get(OVERVIEW_KEY, vals.len());
    if let (Some(ms), Value::Object(m)) = (message_stats(CHANNEL_FIELDS, &vals, &rates), &mut o) {
        m.insert("message_stats".into(), ms);
    }
    Ok(respond_one(o, &ListQuery::from_params(&p)))
}

fn exchange_types() -> Value {
    json!([
        {"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": true},
        {"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": true},
        {"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": true},
        {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": true},
        {"name": "x-delayed-message", "description": "Delayed Message Exchange", "enabled": true},
    ])
}

async fn cluster_name(State(http): St, _c: Caller) -> Json<Value> {
    Json(json!({ "name": http.node.cluster_name }))
}

fn resident_memory() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

fn fd_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(1024)
}

fn node_json(http: &Http) -> Value {
    let (mem_alarm, disk_alarm) = http.alarms.raised();
    let uptime = http.started.elapsed().as_millis().min(u128::from(u32::MAX)) as u64;
    json!({
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
    })
}

async fn nodes(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    caller.require_monitor()?;
    respond(
        vec![node_json(&http)],
        &ListQuery::from_params(&p),
        &["name"],
        false,
    )
}

async fn node(
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

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"name": caller.user.name, "tags": caller.user.tags}))
}

// ---------------------------------------------------------------------------------------
// Vhosts, users, permissions

fn vhost_json(http: &Http, v: &VHost) -> Value {
    let mut ready = 0;
    let mut unacked = 0;
    for q in v.queues() {
        let s = q.snapshot();
        ready += s.messages_ready;
        unacked += s.messages_unacknowledged;
    }
    let totals = http.broker.totals(Some(&v.name));
    let key = format!("vhost/{}", v.name);
    let gauges = http.rates.get(&format!("{key}/gauges"), 3);
    let mut o = json!({
        "name": v.name.to_string(),
        "description": "",
        "tags": [],
        "metadata": {"description": "", "tags": []},
        "default_queue_type": "classic",
        "tracing": false,
        "cluster_state": {http.node.name.clone(): "running"},
        "messages": ready + unacked,
        "messages_details": details(gauges[0]),
        "messages_ready": ready,
        "messages_ready_details": details(gauges[1]),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": details(gauges[2]),
    });
    let vals = values(&totals.messages, CHANNEL_FIELDS);
    let rates = http.rates.get(&key, vals.len());
    if let (Some(ms), Value::Object(m)) = (message_stats(CHANNEL_FIELDS, &vals, &rates), &mut o) {
        m.insert("message_stats".into(), ms);
    }
    o
}

async fn vhosts(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    let items = http
        .broker
        .vhosts()
        .iter()
        .filter(|v| caller.is_monitor() || caller.sees_vhost(&http, &v.name))
        .map(|v| vhost_json(&http, v))
        .collect();
    respond(items, &ListQuery::from_params(&p), &["name"], true)
}

async fn vhost(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    let v = http.broker.vhost(&name).ok_or_else(ApiError::not_found)?;
    if !(caller.is_monitor() || caller.sees_vhost(&http, &name)) {
        return Err(ApiError::not_authorised(
            "User not authorised to access virtual host",
        ));
    }
    Ok(respond_one(
        vhost_json(&http, &v),
        &ListQuery::from_params(&p),
    ))
}

async fn put_vhost(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    body_object(&body)?;
    let existed = http.broker.vhost(&name).is_some();
    http.broker.add_vhost(&name)?;
    if !existed {
        // As RabbitMQ's management API: whoever creates a vhost gets full rights in it.
        http.broker
            .set_permission(&caller.user.name, &name, Permission::full())?;
    }
    Ok(created_or_updated(!existed))
}

async fn delete_vhost(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if !http.broker.delete_vhost(&name)? {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn user_json(http: &Http, u: &warren_broker::User) -> Value {
    let (hash, algorithm) = match &u.password {
        Some(h) => (h.to_base64(), h.algorithm.name()),
        None => (String::new(), HashAlgorithm::Sha256.name()),
    };
    json!({
        "name": u.name,
        "password_hash": hash,
        "hashing_algorithm": algorithm,
        "tags": u.tags,
        "limits": warren_broker::limits::to_json(&http.broker.user_limits(&u.name)),
    })
}

async fn users(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    caller.require_admin()?;
    let items = http
        .broker
        .users()
        .iter()
        .map(|u| user_json(&http, u))
        .collect();
    respond(items, &ListQuery::from_params(&p), &["name"], true)
}

async fn user(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let u = http.broker.user(&name).ok_or_else(ApiError::not_found)?;
    Ok(respond_one(
        user_json(&http, &u),
        &ListQuery::from_params(&p),
    ))
}

async fn put_user(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let m = body_object(&body)?;
    if !m.contains_key("tags") {
        return Err(ApiError::bad_request("tags_not_present"));
    }
    let tags = tags_of(m.get("tags"));
    let algorithm = match text_field(&m, "hashing_algorithm") {
        None => HashAlgorithm::Sha256,
        Some(a) => HashAlgorithm::parse(a)
            .ok_or_else(|| ApiError::bad_request(format!("unknown hashing algorithm '{a}'")))?,
    };
    let existing = http.broker.user(&name);
    let password = match (text_field(&m, "password"), text_field(&m, "password_hash")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "both_password_and_password_hash_are_provided",
            ))
        }
        (Some(p), None) => Some(PasswordHash::new(p, algorithm)),
        (None, Some("")) => None,
        (None, Some(h)) => Some(PasswordHash::from_base64(h, algorithm)?),
        // No password given: an existing user keeps theirs.
        (None, None) => existing.as_ref().and_then(|u| u.password.clone()),
    };
    let created = http.broker.add_user(&name, password, tags)?;
    Ok(created_or_updated(created))
}

async fn delete_user(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if !http.broker.delete_user(&name)? {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn permission_json(user: &str, vhost: &str, p: &Permission) -> Value {
    json!({"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

fn permission_list(http: &Http, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    http.broker
        .permissions()
        .iter()
        .filter(|(u, v, _)| keep(u, v))
        .map(|(u, v, p)| permission_json(u, v, p))
        .collect()
}

async fn permissions(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    caller.require_admin()?;
    respond(
        permission_list(&http, |_, _| true),
        &ListQuery::from_params(&p),
        &["vhost", "user"],
        false,
    )
}

async fn user_permissions(
    State(http): St,
    caller: Caller,
    Path(user): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    http.broker.user(&user).ok_or_else(ApiError::not_found)?;
    respond(
        permission_list(&http, |u, _| u == user),
        &ListQuery::from_params(&p),
        &["vhost", "user"],
        false,
    )
}

async fn vhost_permissions(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    respond(
        permission_list(&http, |_, v| v == vhost),
        &ListQuery::from_params(&p),
        &["vhost", "user"],
        false,
    )
}

async fn permission(
    State(http): St,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let p = http
        .broker
        .permission(&user, &vhost)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(permission_json(&user, &vhost, &p)).into_response())
}

async fn put_permission(
    State(http): St,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let m = body_object(&body)?;
    let missing: Vec<&str> = ["configure", "write", "read"]
        .into_iter()
        .filter(|k| text_field(&m, k).is_none())
        .collect();
    if !missing.is_empty() {
        let keys: Vec<String> = missing
            .iter()
            .map(|k| format!("{{key_missing,{k}}}"))
            .collect();
        return Err(ApiError::bad_request(format!("[{}]", keys.join(","))));
    }
    if http.broker.user(&user).is_none() || http.broker.vhost(&vhost).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let perm = Permission::new(
        text_field(&m, "configure").unwrap_or(""),
        text_field(&m, "write").unwrap_or(""),
        text_field(&m, "read").unwrap_or(""),
    )?;
    let created = http.broker.set_permission(&user, &vhost, perm)?;
    Ok(created_or_updated(created))
}

async fn delete_permission(
    State(http): St,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if !http.broker.clear_permission(&user, &vhost)? {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------
// Exchanges

fn exchange_json(http: &Http, vhost: &str, x: &Arc<warren_broker::Exchange>) -> Value {
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

fn visible_vhosts(http: &Http, caller: &Caller) -> Vec<Arc<VHost>> {
    http.broker
        .vhosts()
        .into_iter()
        .filter(|v| caller.sees_vhost(http, &v.name))
        .collect()
}

fn exchange_list(http: &Http, vhosts: &[Arc<VHost>]) -> Vec<Value> {
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

async fn exchanges(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    let items = exchange_list(&http, &visible_vhosts(&http, &caller));
    respond(items, &ListQuery::from_params(&p), &["vhost", "name"], true)
}

async fn exchanges_in(
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

async fn exchange(
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

async fn put_exchange(
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

async fn delete_exchange(
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
fn properties_of(m: &Map<String, Value>) -> ApiResult<BasicProperties> {
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

async fn publish(
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

// ---------------------------------------------------------------------------------------
// Queues

fn queue_json(http: &Http, vhost: &str, q: &Queue) -> Value {
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
    if let Some(ms) = message_stats(QUEUE_FIELDS, &vals, &rates) {
        o["message_stats"] = ms;
    }
    o
}

fn queue_list(http: &Http, vhosts: &[Arc<VHost>]) -> Vec<Value> {
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
const QUEUE_VIEW: &[&str] = &[
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
fn respond_queues(http: &Http, vhosts: &[Arc<VHost>], q: &ListQuery) -> ApiResult<Response> {
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
fn queue_json_plain(http: &Http, vhost: &str, q: &Queue, totals: bool) -> Value {
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
fn queues_answer(
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

async fn queues(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    queues_answer(&http, &visible_vhosts(&http, &caller), &p)
}

async fn queues_in(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    let v = http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    queues_answer(&http, &[v], &p)
}

async fn queue(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    let v = http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let q = v.queue(&name)?;
    Ok(respond_one(
        queue_json(&http, &vhost, &q),
        &ListQuery::from_params(&p),
    ))
}

async fn put_queue(
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

async fn delete_queue(
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

async fn purge(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let session = caller.session(&http, &vhost)?;
    session.purge_queue(&name)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn properties_json(raw: &bytes::Bytes) -> Value {
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

async fn get_messages(
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
struct Collect(parking_lot::Mutex<Vec<warren_broker::Outbound>>);

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

// ---------------------------------------------------------------------------------------
// Bindings

/// RabbitMQ's `properties_key`: the routing key (URL-quoted, `~` escaped) and, with arguments,
/// `~` and a short hash of them; `~` alone for an empty key without arguments.
fn properties_key(routing_key: &str, args: &FieldTable) -> String {
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

fn binding_json(vhost: &str, source: &str, b: &Binding) -> Value {
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
fn vhost_bindings(v: &VHost) -> Vec<Value> {
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

const BINDING_KEYS: &[&str] = &[
    "vhost",
    "source",
    "destination_type",
    "destination",
    "routing_key",
    "properties_key",
];

async fn bindings(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    let items = visible_vhosts(&http, &caller)
        .iter()
        .flat_map(|v| vhost_bindings(v))
        .collect();
    respond(items, &ListQuery::from_params(&p), BINDING_KEYS, false)
}

async fn bindings_in(
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

fn filter_bindings(
    http: &Http,
    caller: &Caller,
    vhost: &str,
    keep: impl Fn(&Value) -> bool,
) -> ApiResult<Vec<Value>> {
    caller.require_vhost(http, vhost)?;
    let v = http.broker.vhost(vhost).ok_or_else(ApiError::not_found)?;
    Ok(vhost_bindings(&v).into_iter().filter(|b| keep(b)).collect())
}

async fn queue_bindings(
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

async fn exchange_bindings_source(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    let name = exchange_name(&name).to_owned();
    let items = filter_bindings(&http, &caller, &vhost, |b| b["source"] == name.as_str())?;
    respond(items, &ListQuery::from_params(&p), BINDING_KEYS, false)
}

async fn exchange_bindings_destination(
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

fn destination_kind(kind: &str) -> ApiResult<&'static str> {
    match kind {
        "q" => Ok("queue"),
        "e" => Ok("exchange"),
        _ => Err(ApiError::not_found()),
    }
}

async fn bindings_between(
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

fn percent_encode(s: &str) -> String {
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

async fn post_binding(
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

async fn binding(
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

async fn delete_binding(
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

// ---------------------------------------------------------------------------------------
// Connections, channels, consumers

fn connection_json(http: &Http, c: &warren_broker::Connection) -> Value {
    let s = c.snapshot();
    let i = &s.info;
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
        "ssl": i.tls,
        "ssl_protocol": Value::Null, "ssl_key_exchange": Value::Null,
        "ssl_cipher": Value::Null, "ssl_hash": Value::Null,
        "peer_cert_issuer": Value::Null, "peer_cert_subject": Value::Null,
        "peer_cert_validity": Value::Null,
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
fn visible_connections(http: &Http, caller: &Caller) -> Vec<Arc<warren_broker::Connection>> {
    http.broker
        .connections()
        .into_iter()
        .filter(|c| caller.is_monitor() || c.info.user == caller.user.name)
        .collect()
}

async fn connections(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    let items = visible_connections(&http, &caller)
        .iter()
        .map(|c| connection_json(&http, c))
        .collect();
    respond(items, &ListQuery::from_params(&p), &["vhost", "name"], true)
}

async fn vhost_connections(
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

fn own_connection(
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

async fn connection(
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

async fn delete_connection(
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

fn channel_json(
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
    if let Some(ms) = message_stats(CHANNEL_FIELDS, &vals, &rates) {
        o["message_stats"] = ms;
    }
    o
}

fn channel_list(
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

async fn channels(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    let items = channel_list(&http, &caller, |_| true);
    respond(items, &ListQuery::from_params(&p), &["vhost", "name"], true)
}

async fn vhost_channels(
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

async fn connection_channels(
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

async fn channel(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    channel_list(&http, &caller, |_| true)
        .into_iter()
        .find(|c| c["name"] == name.as_str())
        .map(|c| respond_one(c, &ListQuery::from_params(&p)))
        .ok_or_else(ApiError::not_found)
}

fn consumer_list(http: &Http, caller: &Caller, vhost: Option<&str>) -> Vec<Value> {
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

async fn consumers(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    respond(
        consumer_list(&http, &caller, None),
        &ListQuery::from_params(&p),
        &["consumer_tag"],
        false,
    )
}

async fn consumers_in(
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

// ---------------------------------------------------------------------------------------
// Policies and operator policies

fn policy_list(http: &Http, caller: &Caller, operator: bool, vhost: Option<&str>) -> Vec<Value> {
    http.broker
        .policies(operator, vhost)
        .iter()
        .filter(|p| caller.sees_vhost(http, &p.vhost))
        .map(|p| p.to_json(true))
        .collect()
}

/// Who may change policies in `vhost`: administrators, and policymakers with rights there.
fn require_policymaker(http: &Http, caller: &Caller, vhost: &str) -> ApiResult<()> {
    let policymaker = caller.user.tags.iter().any(|t| t == "policymaker");
    if caller.is_admin() || (policymaker && caller.sees_vhost(http, vhost)) {
        Ok(())
    } else {
        Err(ApiError::not_authorised(
            "User not authorised to access object",
        ))
    }
}

/// RabbitMQ escapes HTML in policy errors (not in operator policy ones).
fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn put_any_policy(
    http: &Http,
    vhost: &str,
    name: &str,
    body: &[u8],
    operator: bool,
) -> ApiResult<Response> {
    if http.broker.vhost(vhost).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    let m = body_object(body)?;
    let missing: Vec<String> = ["pattern", "definition"]
        .iter()
        .filter(|k| !m.contains_key(**k))
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!("[{}]", missing.join(","))));
    }
    let fields = warren_broker::PolicyFields {
        vhost,
        name,
        pattern: &m["pattern"],
        apply_to: m.get("apply-to"),
        priority: m.get("priority"),
        definition: &m["definition"],
    };
    match http.broker.set_policy(operator, fields) {
        Ok(created) => Ok(created_or_updated(created)),
        Err(warren_broker::BrokerError::Invalid(text)) if !operator => {
            Err(ApiError::bad_request(escape_html(&text)))
        }
        Err(e) => Err(e.into()),
    }
}

fn get_any_policy(
    http: &Http,
    caller: &Caller,
    vhost: &str,
    name: &str,
    operator: bool,
) -> ApiResult<Response> {
    caller.require_vhost(http, vhost)?;
    policy_list(http, caller, operator, Some(vhost))
        .into_iter()
        .find(|p| p["name"] == name)
        .map(|p| Json(p).into_response())
        .ok_or_else(ApiError::not_found)
}

fn delete_any_policy(http: &Http, vhost: &str, name: &str, operator: bool) -> ApiResult<Response> {
    if http.broker.delete_policy(operator, vhost, name)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found())
    }
}

const POLICY_KEYS: &[&str] = &["priority", "vhost", "name"];

async fn policies(State(http): St, caller: Caller, Query(p): Params) -> ApiResult<Response> {
    respond(
        policy_list(&http, &caller, false, None),
        &ListQuery::from_params(&p),
        POLICY_KEYS,
        false,
    )
}

async fn policies_in(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_vhost(&http, &vhost)?;
    respond(
        policy_list(&http, &caller, false, Some(&vhost)),
        &ListQuery::from_params(&p),
        POLICY_KEYS,
        false,
    )
}

async fn policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    get_any_policy(&http, &caller, &vhost, &name, false)
}

async fn put_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    require_policymaker(&http, &caller, &vhost)?;
    put_any_policy(&http, &vhost, &name, &body, false)
}

async fn delete_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    require_policymaker(&http, &caller, &vhost)?;
    delete_any_policy(&http, &vhost, &name, false)
}

async fn operator_policies(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    respond(
        policy_list(&http, &caller, true, None),
        &ListQuery::from_params(&p),
        POLICY_KEYS,
        false,
    )
}

async fn operator_policies_in(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    caller.require_vhost(&http, &vhost)?;
    respond(
        policy_list(&http, &caller, true, Some(&vhost)),
        &ListQuery::from_params(&p),
        POLICY_KEYS,
        false,
    )
}

async fn operator_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    get_any_policy(&http, &caller, &vhost, &name, true)
}

async fn put_operator_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    put_any_policy(&http, &vhost, &name, &body, true)
}

async fn delete_operator_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    delete_any_policy(&http, &vhost, &name, true)
}

// ---------------------------------------------------------------------------------------
// Vhost and user limits

fn vhost_limit_list(http: &Http, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    let mut vs = http.broker.vhosts();
    vs.sort_by(|a, b| a.name.cmp(&b.name));
    vs.iter()
        .filter(|v| only.is_none_or(|o| o == &*v.name))
        .filter(|v| caller.is_monitor() || caller.sees_vhost(http, &v.name))
        .filter_map(|v| {
            let l = v.limits();
            (!l.is_empty()).then(|| {
                json!({"vhost": v.name.to_string(), "value": warren_broker::limits::to_json(&l)})
            })
        })
        .collect()
}

async fn vhost_limits(State(http): St, caller: Caller) -> Json<Value> {
    Json(Value::Array(vhost_limit_list(&http, &caller, None)))
}

async fn vhost_limits_of(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(vhost_limit_list(&http, &caller, Some(&vhost)))).into_response())
}

/// `{"value": N}` of a limit PUT.
fn limit_value(body: &[u8]) -> ApiResult<Value> {
    body_object(body)?
        .remove("value")
        .ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))
}

async fn put_vhost_limit(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if http.broker.vhost(&vhost).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    let value = limit_value(&body)?;
    http.broker.set_vhost_limit(&vhost, &name, Some(&value))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_vhost_limit(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    http.broker.set_vhost_limit(&vhost, &name, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn user_limit_list(http: &Http, only: Option<&str>) -> Vec<Value> {
    http.broker
        .all_user_limits()
        .iter()
        .filter(|(u, _)| only.is_none_or(|o| o == u))
        .map(|(u, l)| json!({"user": u, "value": warren_broker::limits::to_json(l)}))
        .collect()
}

async fn user_limits(State(http): St, _caller: Caller) -> Json<Value> {
    Json(Value::Array(user_limit_list(&http, None)))
}

async fn user_limits_of(
    State(http): St,
    _caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    http.broker.user(&user).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(user_limit_list(&http, Some(&user)))).into_response())
}

async fn put_user_limit(
    State(http): St,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let value = limit_value(&body)?;
    if http.broker.user(&user).is_none() {
        return Err(ApiError::bad_request(format!(
            "[\"no_such_user\",\"{user}\"]"
        )));
    }
    http.broker.set_user_limit(&user, &name, Some(&value))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_user_limit(
    State(http): St,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    http.broker.set_user_limit(&user, &name, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------
// Definitions, health

async fn definitions(State(http): St, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    Ok(Json(Definitions::export(&http.broker, None)).into_response())
}

async fn vhost_definitions(
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

fn import(http: &Http, body: &[u8], vhost: Option<&str>) -> ApiResult<Response> {
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
        warren_broker::BrokerError::Storage(m) => ApiError::internal(m),
        other => ApiError::bad_request(other.to_string()),
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn post_definitions(State(http): St, caller: Caller, body: Bytes) -> ApiResult<Response> {
    caller.require_admin()?;
    import(&http, &body, None)
}

async fn post_vhost_definitions(
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
async fn aliveness(
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

async fn health_ok(_c: Caller) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn health_alarms(State(http): St, _c: Caller) -> Response {
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

async fn health_port(State(http): St, _c: Caller, Path(port): Path<u16>) -> Response {
    let listening = http.node.amqp_listeners.iter().any(|a| a.port() == port)
        || http
            .node
            .management_listener
            .is_some_and(|a| a.port() == port)
        || http
            .node
            .prometheus_listener
            .is_some_and(|a| a.port() == port);
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

async fn health_protocol(State(http): St, _c: Caller, Path(protocol): Path<String>) -> Response {
    let have: Vec<&str> = [
        (!http.node.amqp_listeners.is_empty()).then_some("amqp"),
        http.node.management_listener.map(|_| "http"),
        http.node.prometheus_listener.map(|_| "http/prometheus"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let wanted = match protocol.as_str() {
        "amqp091" | "amqp0-9-1" | "amqp" => "amqp",
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

// ---------------------------------------------------------------------------------------
// Sampling for rates

/// Reads every counter the API shows a rate for (see [`crate::rates`]).
pub fn sample(http: &Http) {
    let now = Instant::now();
    let r = &http.rates;
    let pass = r.begin();
    let totals = http.broker.totals(None);
    r.observe(
        pass,
        OVERVIEW_KEY.into(),
        values(&totals.messages, CHANNEL_FIELDS),
        now,
    );
    let (mut all_ready, mut all_unacked) = (0, 0);
    for v in http.broker.vhosts() {
        let key = format!("vhost/{}", v.name);
        let t = http.broker.totals(Some(&v.name));
        r.observe(pass, key.clone(), values(&t.messages, CHANNEL_FIELDS), now);
        let (mut ready, mut unacked) = (0, 0);
        for q in v.queues() {
            let s = q.snapshot();
            let qkey = format!("queue/{}/{}", v.name, q.name);
            r.observe(pass, qkey.clone(), values(&s.stats, QUEUE_FIELDS), now);
            let gauges = vec![
                s.messages_ready + s.messages_unacknowledged,
                s.messages_ready,
                s.messages_unacknowledged,
            ];
            r.observe(pass, format!("{qkey}/gauges"), gauges, now);
            ready += s.messages_ready;
            unacked += s.messages_unacknowledged;
        }
        r.observe(
            pass,
            format!("{key}/gauges"),
            vec![ready + unacked, ready, unacked],
            now,
        );
        all_ready += ready;
        all_unacked += unacked;
        for x in v.exchanges() {
            let s = http.broker.exchange_stats(&x);
            r.observe(
                pass,
                format!("exchange/{}/{}", v.name, x.name),
                vec![s.publish_in, s.publish_out],
                now,
            );
        }
    }
    r.observe(
        pass,
        TOTALS_KEY.into(),
        vec![all_ready + all_unacked, all_ready, all_unacked],
        now,
    );
    for c in http.broker.connections() {
        let s = c.snapshot();
        r.observe(
            pass,
            format!("connection/{}", s.info.name),
            vec![s.recv_oct, s.send_oct],
            now,
        );
        for ch in c.channels() {
            let cs = ch.snapshot(&c.info);
            r.observe(
                pass,
                format!("channel/{}", cs.name),
                values(&cs.stats, CHANNEL_FIELDS),
                now,
            );
        }
    }
    r.end(pass);
}
