//! Vhosts, users, permissions and topic permissions.

#[allow(unused_imports)]
use super::*;

pub(super) fn vhost_json(http: &Http, v: &VHost, p: &HashMap<String, String>) -> Value {
    let mut ready = 0;
    let mut unacked = 0;
    for q in v.queues() {
        let s = q.snapshot();
        ready += s.messages_ready;
        unacked += s.messages_unacknowledged;
    }
    let totals = http.broker.totals(Some(&v.name));
    let key = format!("vhost/{}", v.name);
    let [messages_details, ready_details, unacked_details] = gauge_details(
        http,
        &format!("{key}/gauges"),
        Window::from_params(p, "lengths"),
    );
    let meta = v.metadata();
    let mut o = json!({
        "name": v.name.to_string(),
        "description": meta.description,
        "tags": meta.tags,
        "metadata": warren_broker::definitions::metadata_json(&meta),
        "default_queue_type": meta.default_queue_type.as_deref().unwrap_or("classic"),
        "tracing": false,
        "cluster_state": {http.node.name.clone(): "running"},
        "messages": ready + unacked,
        "messages_details": messages_details,
        "messages_ready": ready,
        "messages_ready_details": ready_details,
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": unacked_details,
    });
    if let (Some(ms), Value::Object(m)) = (
        windowed_message_stats(http, &key, &totals.messages, p),
        &mut o,
    ) {
        m.insert("message_stats".into(), ms);
    }
    o
}

pub(super) async fn vhosts(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    let items = http
        .broker
        .vhosts()
        .iter()
        .filter(|v| caller.is_monitor() || caller.sees_vhost(&http, &v.name))
        .map(|v| vhost_json(&http, v, &p))
        .collect();
    respond(items, &ListQuery::from_params(&p), &["name"], true)
}

pub(super) async fn vhost(
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
        vhost_json(&http, &v, &p),
        &ListQuery::from_params(&p),
    ))
}

pub(super) async fn put_vhost(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let m = body_object(&body)?;
    // RabbitMQ 3.11+ clients send `metadata`; others the fields themselves.
    let meta = match m.get("metadata") {
        Some(Value::Object(o)) => o.clone(),
        _ => m.clone(),
    };
    let field = |k: &str| meta.get(k).or_else(|| m.get(k));
    let metadata = VHostMetadata {
        description: field("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        tags: tags_of(field("tags")),
        default_queue_type: field("default_queue_type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
    };
    let existed = !http.broker.put_vhost(&name, metadata)?;
    if !existed {
        // As RabbitMQ's management API: whoever creates a vhost gets full rights in it.
        http.broker
            .set_permission(&caller.user.name, &name, Permission::full())?;
    }
    Ok(created_or_updated(!existed))
}

pub(super) async fn delete_vhost(
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

pub(super) fn user_json(http: &Http, u: &warren_broker::User) -> Value {
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

pub(super) async fn users(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let items = http
        .broker
        .users()
        .iter()
        .map(|u| user_json(&http, u))
        .collect();
    respond(items, &ListQuery::from_params(&p), &["name"], true)
}

pub(super) async fn user(
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

pub(super) async fn put_user(
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

pub(super) async fn delete_user(
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

pub(super) fn permission_json(user: &str, vhost: &str, p: &Permission) -> Value {
    json!({"user": user, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

pub(super) fn permission_list(http: &Http, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    http.broker
        .permissions()
        .iter()
        .filter(|(u, v, _)| keep(u, v))
        .map(|(u, v, p)| permission_json(u, v, p))
        .collect()
}

pub(super) async fn permissions(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    respond(
        permission_list(&http, |_, _| true),
        &ListQuery::from_params(&p),
        &["vhost", "user"],
        false,
    )
}

pub(super) async fn user_permissions(
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

pub(super) async fn vhost_permissions(
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

pub(super) async fn permission(
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

/// The three text fields of a permission PUT, with RabbitMQ's answers for missing ones
/// (`[{key_missing,read}]`) and for a user or vhost that does not exist.
fn rights_fields<'a>(
    http: &Http,
    m: &'a Map<String, Value>,
    user: &str,
    vhost: &str,
    keys: [&str; 3],
) -> ApiResult<[&'a str; 3]> {
    let missing: Vec<String> = keys
        .iter()
        .filter(|k| text_field(m, k).is_none())
        .map(|k| format!("{{key_missing,{k}}}"))
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::bad_request(format!("[{}]", missing.join(","))));
    }
    if http.broker.user(user).is_none() || http.broker.vhost(vhost).is_none() {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    Ok(keys.map(|k| text_field(m, k).unwrap_or("")))
}

pub(super) async fn put_permission(
    State(http): St,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let m = body_object(&body)?;
    let [configure, write, read] =
        rights_fields(&http, &m, &user, &vhost, ["configure", "write", "read"])?;
    let perm = Permission::new(configure, write, read)?;
    let created = http.broker.set_permission(&user, &vhost, perm)?;
    Ok(created_or_updated(created))
}

pub(super) async fn delete_permission(
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

pub(super) fn topic_permission_list(http: &Http, keep: impl Fn(&str, &str) -> bool) -> Vec<Value> {
    http.broker
        .topic_permissions()
        .iter()
        .filter(|(u, v, _)| keep(u, v))
        .map(|(u, v, t)| topic_permission_json(u, v, t))
        .collect()
}

pub(super) const TOPIC_PERMISSION_SORT: &[&str] = &["vhost", "user", "exchange"];

pub(super) async fn topic_permissions(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    respond(
        topic_permission_list(&http, |_, _| true),
        &ListQuery::from_params(&p),
        TOPIC_PERMISSION_SORT,
        false,
    )
}

pub(super) async fn user_topic_permissions(
    State(http): St,
    caller: Caller,
    Path(user): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    http.broker.user(&user).ok_or_else(ApiError::not_found)?;
    respond(
        topic_permission_list(&http, |u, _| u == user),
        &ListQuery::from_params(&p),
        TOPIC_PERMISSION_SORT,
        false,
    )
}

pub(super) async fn vhost_topic_permissions(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    respond(
        topic_permission_list(&http, |_, v| v == vhost),
        &ListQuery::from_params(&p),
        TOPIC_PERMISSION_SORT,
        false,
    )
}

/// One user's topic permissions in one vhost: a list (one entry per exchange), 404 if none.
pub(super) async fn topic_permission(
    State(http): St,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let list = topic_permission_list(&http, |u, v| u == user && v == vhost);
    if list.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(list)).into_response())
}

pub(super) async fn put_topic_permission(
    State(http): St,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let m = body_object(&body)?;
    let [exchange, write, read] =
        rights_fields(&http, &m, &user, &vhost, ["exchange", "write", "read"])?;
    let perm = TopicPermission::new(exchange, write, read)?;
    let created = http.broker.set_topic_permission(&user, &vhost, perm)?;
    Ok(created_or_updated(created))
}

/// Clears the user's topic permissions in the vhost: all of them, or with `?exchange=` (or
/// `{"exchange": ..}` in the body, as rabbitmqadmin v2 sends it) one exchange's.
pub(super) async fn delete_topic_permission(
    State(http): St,
    caller: Caller,
    Path((vhost, user)): Path<(String, String)>,
    Query(p): Params,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let from_body = if body.is_empty() {
        None
    } else {
        body_object(&body)?
            .get("exchange")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let exchange = p.get("exchange").cloned().or(from_body);
    if !http
        .broker
        .clear_topic_permissions(&user, &vhost, exchange.as_deref())?
    {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
