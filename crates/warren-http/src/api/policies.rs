//! Policies, operator policies, vhost and user limits, runtime parameters.

#[allow(unused_imports)]
use super::*;

pub(super) fn policy_list(
    http: &Http,
    caller: &Caller,
    operator: bool,
    vhost: Option<&str>,
) -> Vec<Value> {
    http.broker
        .policies(operator, vhost)
        .iter()
        .filter(|p| caller.sees_vhost(http, &p.vhost))
        .map(|p| p.to_json(true))
        .collect()
}

/// Who may change policies in `vhost`: administrators, and policymakers with rights there.
pub(super) fn require_policymaker(http: &Http, caller: &Caller, vhost: &str) -> ApiResult<()> {
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
pub(super) fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(super) fn put_any_policy(
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

pub(super) fn get_any_policy(
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

pub(super) fn delete_any_policy(
    http: &Http,
    vhost: &str,
    name: &str,
    operator: bool,
) -> ApiResult<Response> {
    if http.broker.delete_policy(operator, vhost, name)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found())
    }
}

pub(super) const POLICY_KEYS: &[&str] = &["priority", "vhost", "name"];

pub(super) async fn policies(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    respond(
        policy_list(&http, &caller, false, None),
        &ListQuery::from_params(&p),
        POLICY_KEYS,
        false,
    )
}

pub(super) async fn policies_in(
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

pub(super) async fn policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    get_any_policy(&http, &caller, &vhost, &name, false)
}

pub(super) async fn put_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    require_policymaker(&http, &caller, &vhost)?;
    put_any_policy(&http, &vhost, &name, &body, false)
}

pub(super) async fn delete_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    require_policymaker(&http, &caller, &vhost)?;
    delete_any_policy(&http, &vhost, &name, false)
}

pub(super) async fn operator_policies(
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

pub(super) async fn operator_policies_in(
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

pub(super) async fn operator_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    get_any_policy(&http, &caller, &vhost, &name, true)
}

pub(super) async fn put_operator_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    put_any_policy(&http, &vhost, &name, &body, true)
}

pub(super) async fn delete_operator_policy(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    delete_any_policy(&http, &vhost, &name, true)
}

// ---------------------------------------------------------------------------------------
// Vhost and user limits

pub(super) fn vhost_limit_list(http: &Http, caller: &Caller, only: Option<&str>) -> Vec<Value> {
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

// ---------------------------------------------------------------------------------------
// Runtime parameters: Warren's one vhost-scoped component is `vhost-limits` (the limits
// above, as RabbitMQ stores them); policies are not listed here, as in RabbitMQ.

pub(super) const VHOST_LIMITS: &str = "vhost-limits";

pub(super) fn parameter_list(
    http: &Http,
    caller: &Caller,
    component: Option<&str>,
    vhost: Option<&str>,
) -> Vec<Value> {
    if component.is_some_and(|c| c != VHOST_LIMITS) {
        return Vec::new();
    }
    vhost_limit_list(http, caller, vhost)
        .into_iter()
        .map(|mut l| {
            if let Value::Object(o) = &mut l {
                o.insert("component".into(), json!(VHOST_LIMITS));
                o.insert("name".into(), json!("limits"));
            }
            l
        })
        .collect()
}

pub(super) async fn parameters(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_policymaker()?;
    respond(
        parameter_list(&http, &caller, None, None),
        &ListQuery::from_params(&p),
        &["vhost", "name"],
        false,
    )
}

pub(super) async fn parameters_of(
    State(http): St,
    caller: Caller,
    Path(component): Path<String>,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_policymaker()?;
    respond(
        parameter_list(&http, &caller, Some(&component), None),
        &ListQuery::from_params(&p),
        &["vhost", "name"],
        false,
    )
}

pub(super) async fn parameters_in(
    State(http): St,
    caller: Caller,
    Path((component, vhost)): Path<(String, String)>,
    Query(p): Params,
) -> ApiResult<Response> {
    require_policymaker(&http, &caller, &vhost)?;
    http.broker
        .vhost(&vhost)
        .ok_or_else(ApiError::vhost_not_found)?;
    respond(
        parameter_list(&http, &caller, Some(&component), Some(&vhost)),
        &ListQuery::from_params(&p),
        &["vhost", "name"],
        false,
    )
}

pub(super) async fn parameter(
    State(http): St,
    caller: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    require_policymaker(&http, &caller, &vhost)?;
    parameter_list(&http, &caller, Some(&component), Some(&vhost))
        .into_iter()
        .find(|p| p["name"] == name.as_str())
        .map(|p| Json(p).into_response())
        .ok_or_else(ApiError::not_found)
}

/// RabbitMQ's answer for a component no plugin provides.
pub(super) fn unknown_component(component: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Validation failed\n\ncomponent {component} not found\n"
    ))
}

/// `PUT /api/parameters/vhost-limits/{vhost}/limits` with `{"value": {...}}` replaces the
/// vhost's limits, as `rabbitmqctl set_vhost_limits` does.
pub(super) async fn put_parameter(
    State(http): St,
    caller: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if component != VHOST_LIMITS {
        return Err(unknown_component(&component));
    }
    let v = http
        .broker
        .vhost(&vhost)
        .ok_or_else(ApiError::vhost_not_found)?;
    let m = body_object(&body)?;
    let Some(Value::Object(limits)) = m.get("value") else {
        return Err(ApiError::bad_request("[{key_missing,value}]"));
    };
    if name != "limits" {
        return Err(ApiError::bad_request(format!(
            "Validation failed\n\nthe name of a vhost-limits parameter must be 'limits', not '{name}'\n"
        )));
    }
    let existed = !v.limits().is_empty();
    for old in warren_broker::limits::to_json(&v.limits())
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys().cloned().collect::<Vec<_>>())
    {
        if !limits.contains_key(&old) {
            http.broker.set_vhost_limit(&vhost, &old, None)?;
        }
    }
    for (k, value) in limits {
        http.broker.set_vhost_limit(&vhost, k, Some(value))?;
    }
    Ok(created_or_updated(!existed))
}

pub(super) async fn delete_parameter(
    State(http): St,
    caller: Caller,
    Path((component, vhost, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    if component != VHOST_LIMITS || name != "limits" {
        return Err(ApiError::not_found());
    }
    let v = http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    let current = warren_broker::limits::to_json(&v.limits());
    let Some(keys) = current.as_object().filter(|o| !o.is_empty()) else {
        return Err(ApiError::not_found());
    };
    for k in keys.keys() {
        http.broker.set_vhost_limit(&vhost, k, None)?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The cluster-wide parameters RabbitMQ always has: the cluster's name and its id.
pub(super) fn global_parameter_list(http: &Http) -> Vec<Value> {
    vec![
        json!({"name": "cluster_name", "value": http.node.cluster_name}),
        json!({"name": "internal_cluster_id", "value": http.node.cluster_id()}),
    ]
}

pub(super) async fn global_parameters(
    State(http): St,
    caller: Caller,
    Query(p): Params,
) -> ApiResult<Response> {
    caller.require_admin()?;
    respond(
        global_parameter_list(&http),
        &ListQuery::from_params(&p),
        &["name"],
        false,
    )
}

pub(super) async fn global_parameter(
    State(http): St,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    global_parameter_list(&http)
        .into_iter()
        .find(|p| p["name"] == name.as_str())
        .map(|p| Json(p).into_response())
        .ok_or_else(ApiError::not_found)
}

pub(super) async fn vhost_limits(State(http): St, caller: Caller) -> Json<Value> {
    Json(Value::Array(vhost_limit_list(&http, &caller, None)))
}

pub(super) async fn vhost_limits_of(
    State(http): St,
    caller: Caller,
    Path(vhost): Path<String>,
) -> ApiResult<Response> {
    http.broker.vhost(&vhost).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(vhost_limit_list(&http, &caller, Some(&vhost)))).into_response())
}

/// `{"value": N}` of a limit PUT.
pub(super) fn limit_value(body: &[u8]) -> ApiResult<Value> {
    body_object(body)?
        .remove("value")
        .ok_or_else(|| ApiError::bad_request("[{key_missing,value}]"))
}

pub(super) async fn put_vhost_limit(
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

pub(super) async fn delete_vhost_limit(
    State(http): St,
    caller: Caller,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    http.broker.set_vhost_limit(&vhost, &name, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) fn user_limit_list(http: &Http, only: Option<&str>) -> Vec<Value> {
    http.broker
        .all_user_limits()
        .iter()
        .filter(|(u, _)| only.is_none_or(|o| o == u))
        .map(|(u, l)| json!({"user": u, "value": warren_broker::limits::to_json(l)}))
        .collect()
}

pub(super) async fn user_limits(State(http): St, _caller: Caller) -> Json<Value> {
    Json(Value::Array(user_limit_list(&http, None)))
}

pub(super) async fn user_limits_of(
    State(http): St,
    _caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    http.broker.user(&user).ok_or_else(ApiError::not_found)?;
    Ok(Json(Value::Array(user_limit_list(&http, Some(&user)))).into_response())
}

pub(super) async fn put_user_limit(
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

pub(super) async fn delete_user_limit(
    State(http): St,
    caller: Caller,
    Path((user, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    http.broker.set_user_limit(&user, &name, None)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
