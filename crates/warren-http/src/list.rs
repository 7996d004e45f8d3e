//! RabbitMQ's list parameters: `sort`, `sort_reverse`, `columns`, and pagination (`page`,
//! `page_size`, `name`, `use_regex`), applied on the server so that a client never has to
//! fetch a whole list of 10,000 queues.

use std::cmp::Ordering;
use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};

/// The query string of a list request.
#[derive(Debug, Default, Clone)]
pub struct ListQuery {
    sort: Option<String>,
    reverse: bool,
    columns: Option<Vec<String>>,
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: bool,
}

impl ListQuery {
    pub fn from_params(p: &HashMap<String, String>) -> Self {
        ListQuery {
            sort: p.get("sort").cloned(),
            reverse: p.get("sort_reverse").is_some_and(|v| v == "true"),
            columns: p
                .get("columns")
                .filter(|c| !c.is_empty())
                .map(|c| c.split(',').map(str::to_owned).collect()),
            page: p.get("page").cloned(),
            page_size: p.get("page_size").cloned(),
            name: p.get("name").cloned(),
            use_regex: p.get("use_regex").is_some_and(|v| v == "true"),
        }
    }
}

/// A value at a dotted path (`message_stats.publish_details.rate`).
fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// Erlang's term order, as RabbitMQ sorts: missing values (0) and numbers first, then atoms
/// (booleans, null), then lists and objects, then strings (bytewise).
fn rank(v: Option<&Value>) -> u8 {
    match v {
        None | Some(Value::Number(_)) => 0,
        Some(Value::Bool(_)) | Some(Value::Null) => 1,
        Some(Value::Array(_)) | Some(Value::Object(_)) => 2,
        Some(Value::String(_)) => 3,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let (ra, rb) = (rank(a), rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Some(Value::String(x)), Some(Value::String(y))) => x.as_bytes().cmp(y.as_bytes()),
        _ => {
            let n = |v: Option<&Value>| v.and_then(Value::as_f64).unwrap_or(0.0);
            n(a).partial_cmp(&n(b)).unwrap_or(Ordering::Equal)
        }
    }
}

/// Keeps only the named (dotted) columns of an object.
fn project(item: &Value, columns: &[String]) -> Value {
    let mut out = Map::new();
    for c in columns {
        let mut parts = c.split('.').peekable();
        let (mut src, mut dst) = (item, &mut out);
        while let Some(k) = parts.next() {
            let Some(v) = src.get(k) else { break };
            if parts.peek().is_none() {
                dst.insert(k.to_owned(), v.clone());
                break;
            }
            let next = dst
                .entry(k.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(m) = next else { break };
            dst = m;
            src = v;
        }
    }
    Value::Object(out)
}

fn invalid_pagination(page: &str, size: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid pagination parameters: page number {page}, page size {size}"
    ))
    .named("invalid_pagination_parameters")
}

/// Sorts, filters, pages and projects `items`, whose default order is given by `keys`; answers
/// with a plain array, or RabbitMQ's page envelope when `page` was asked for and `pageable`.
pub fn respond(
    items: Vec<Value>,
    q: &ListQuery,
    keys: &[&str],
    pageable: bool,
) -> ApiResult<Response> {
    respond_rows(
        items.into_iter().map(|v| (v, ())).collect(),
        q,
        keys,
        pageable,
        |v, _| v,
    )
}

/// The keys a list is sorted by: the asked-for one, then the list's own as tie-breakers.
pub fn sort_keys<'a>(q: &'a ListQuery, keys: &[&'a str]) -> Vec<&'a str> {
    match q.sort.as_deref() {
        Some("") => Vec::new(),
        Some(k) => std::iter::once(k).chain(keys.iter().copied()).collect(),
        None => keys.to_vec(),
    }
}

/// Whether the answer is a page (so that a long list can sort and filter on a small view of
/// each item and build whole objects only for the page).
pub fn paging(q: &ListQuery) -> bool {
    q.page.is_some()
}

/// [`respond`] over rows of (the view sorted and filtered on, the item): `finish` makes the
/// object answered for each row kept (on a page, only the page's rows).
pub fn respond_rows<T>(
    mut rows: Vec<(Value, T)>,
    q: &ListQuery,
    keys: &[&str],
    pageable: bool,
    finish: impl Fn(Value, T) -> Value,
) -> ApiResult<Response> {
    let sort_keys = sort_keys(q, keys);
    if !sort_keys.is_empty() {
        rows.sort_by(|(a, _), (b, _)| {
            sort_keys
                .iter()
                .map(|k| compare(at(a, k), at(b, k)))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        });
    }
    if q.reverse {
        rows.reverse();
    }
    let project_all = |items: Vec<Value>| -> Vec<Value> {
        match &q.columns {
            Some(c) => items.iter().map(|i| project(i, c)).collect(),
            None => items,
        }
    };
    let Some(page) = q.page.as_deref().filter(|_| pageable) else {
        let items = rows.into_iter().map(|(v, t)| finish(v, t)).collect();
        return Ok(Json(project_all(items)).into_response());
    };
    let size_text = q.page_size.as_deref().unwrap_or("100");
    let (Ok(page_no), Ok(size)) = (page.parse::<i64>(), size_text.parse::<i64>()) else {
        return Err(ApiError::bad_request("Pagination parameters are invalid"));
    };
    if page_no <= 0 || size <= 0 || size > 500 {
        return Err(invalid_pagination(page, size_text));
    }
    let total = rows.len();
    if let Some(name) = q.name.as_deref().filter(|n| !n.is_empty()) {
        let matches: Box<dyn Fn(&str) -> bool> = if q.use_regex {
            let re = regex::RegexBuilder::new(name)
                .case_insensitive(true)
                .build()
                .map_err(|_| ApiError::bad_request("Pagination parameters are invalid"))?;
            Box::new(move |s: &str| re.is_match(s))
        } else {
            let needle = name.to_lowercase();
            Box::new(move |s: &str| s.to_lowercase().contains(&needle))
        };
        rows.retain(|(i, _)| i.get("name").and_then(Value::as_str).is_some_and(&matches));
    }
    let filtered = rows.len();
    let (page_no, size) = (page_no as usize, size as usize);
    if (page_no - 1) * size > filtered {
        return Err(ApiError::bad_request(format!(
            "Page out of range, page: {page_no} page size: {size}, len: {filtered}"
        ))
        .named("page_out_of_range"));
    }
    let page_items: Vec<Value> = rows
        .into_iter()
        .skip((page_no - 1) * size)
        .take(size)
        .map(|(v, t)| finish(v, t))
        .collect();
    let page_items = project_all(page_items);
    Ok(Json(json!({
        "filtered_count": filtered,
        "item_count": page_items.len(),
        "items": page_items,
        "page": page_no,
        "page_count": filtered.div_ceil(size),
        "page_size": size,
        "total_count": total,
    }))
    .into_response())
}

/// One object, projected to `columns` if asked.
pub fn respond_one(item: Value, q: &ListQuery) -> Response {
    match &q.columns {
        Some(c) => Json(project(&item, c)).into_response(),
        None => Json(item).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: Response) -> Value {
        let body = futures_body(r);
        serde_json::from_slice(&body).expect("json")
    }

    fn futures_body(r: Response) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .expect("body")
                .to_vec()
        })
    }

    fn q(pairs: &[(&str, &str)]) -> ListQuery {
        ListQuery::from_params(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn items() -> Vec<Value> {
        (0..8)
            .map(|i| json!({"name": format!("q{i}"), "vhost": "/", "messages": 8 - i}))
            .collect()
    }

    #[test]
    fn pages_follow_rabbitmq_rules() {
        let r = respond(
            items(),
            &q(&[("page", "2"), ("page_size", "3")]),
            &["vhost", "name"],
            true,
        )
        .expect("page");
        let v = names(r);
        assert_eq!(v["filtered_count"], 8);
        assert_eq!(v["page_count"], 3);
        assert_eq!(v["item_count"], 3);
        assert_eq!(v["items"][0]["name"], "q3");
        // The page right after an exactly full last one is empty, not an error.
        let r = respond(
            items(),
            &q(&[("page", "3"), ("page_size", "4")]),
            &["name"],
            true,
        )
        .expect("empty page");
        assert_eq!(names(r)["item_count"], 0);
        let e = respond(
            items(),
            &q(&[("page", "4"), ("page_size", "4")]),
            &["name"],
            true,
        )
        .expect_err("past the end");
        assert_eq!(e.error, "page_out_of_range");
        let e = respond(
            items(),
            &q(&[("page", "1"), ("page_size", "501")]),
            &["name"],
            true,
        )
        .expect_err("too big");
        assert_eq!(e.error, "invalid_pagination_parameters");
    }

    #[test]
    fn sort_filter_and_columns() {
        let r = respond(
            items(),
            &q(&[
                ("page", "1"),
                ("sort", "messages"),
                ("name", "Q[1-3]"),
                ("use_regex", "true"),
                ("columns", "name"),
            ]),
            &["vhost", "name"],
            true,
        )
        .expect("list");
        let v = names(r);
        assert_eq!(v["total_count"], 8);
        assert_eq!(
            v["items"],
            json!([{"name": "q3"}, {"name": "q2"}, {"name": "q1"}])
        );
        let r = respond(items(), &q(&[("sort_reverse", "true")]), &["name"], true).expect("plain");
        assert_eq!(names(r)[0]["name"], "q7");
    }
}
