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
use warren_broker::definitions::{
    field_to_json, json_to_table, table_to_json, topic_permission_json, Definitions,
};
use warren_broker::{
    Binding, Destination, ExchangeDeclare, HashAlgorithm, PasswordHash, Permission, Publish,
    Publisher, Queue, QueueDeclare, TopicPermission, VHost, VHostMetadata,
};
use warren_codec::{BasicProperties, FieldTable, FieldValue, ShortString};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::list::{respond, respond_one, ListQuery};
use crate::process::{fd_limit, open_fds, resident_memory};
use crate::rates::{
    details, details_with, message_stats, values, Window, CHANNEL_FIELDS, QUEUE_FIELDS,
};
use crate::Http;

mod access;
mod bindings;
mod connections;
mod definitions;
mod exchanges;
mod overview;
mod policies;
mod queues;

use access::*;
use bindings::*;
use connections::*;
use definitions::*;
use exchanges::*;
use overview::*;
use policies::*;
use queues::*;

type St = State<Arc<Http>>;
type Params = Query<HashMap<String, String>>;

pub fn router() -> Router<Arc<Http>> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/cluster-name", get(cluster_name))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{node}", get(node))
        .route("/api/nodes/{node}/memory", get(node_memory))
        .route("/api/parameters", get(parameters))
        .route("/api/parameters/{component}", get(parameters_of))
        .route("/api/parameters/{component}/{vhost}", get(parameters_in))
        .route(
            "/api/parameters/{component}/{vhost}/{name}",
            get(parameter).put(put_parameter).delete(delete_parameter),
        )
        .route("/api/global-parameters", get(global_parameters))
        .route("/api/global-parameters/{name}", get(global_parameter))
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
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(vhost_topic_permissions),
        )
        .route("/api/users", get(users))
        .route(
            "/api/users/{user}",
            get(user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route(
            "/api/users/{user}/topic-permissions",
            get(user_topic_permissions),
        )
        .route("/api/topic-permissions", get(topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(topic_permission)
                .put(put_topic_permission)
                .delete(delete_topic_permission),
        )
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
        // RabbitMQ 3.13+'s list with every metric; Warren's list already has them all. (As
        // there, this hides a vhost named "detailed" from /api/queues/{vhost}.)
        .route("/api/queues/detailed", get(queues))
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
