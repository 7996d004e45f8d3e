//! The management API over real sockets: a broker with its AMQP server and HTTP listeners on
//! ephemeral ports, driven with reqwest (HTTP) and lapin (AMQP), checked against the answers
//! RabbitMQ 3.10 gives (docs/dev/management-api.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use warren_broker::{Broker, HashAlgorithm, PasswordHash, Permission};
use warren_http::{Http, NodeInfo};
use warren_server::{Server, ServerConfig};

struct Node {
    broker: Arc<Broker>,
    http: Arc<Http>,
    amqp: SocketAddr,
    api: SocketAddr,
    metrics: SocketAddr,
    _shutdown: watch::Sender<bool>,
}

async fn start() -> Node {
    let broker = Arc::new(Broker::new());
    let server = Server::bind(
        &["127.0.0.1:0".parse().unwrap()],
        broker.clone(),
        ServerConfig::default(),
    )
    .await
    .expect("bind AMQP");
    let amqp = server.local_addrs()[0];
    let api_l = TcpListener::bind("127.0.0.1:0").await.expect("bind API");
    let metrics_l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind metrics");
    let (api, metrics) = (api_l.local_addr().unwrap(), metrics_l.local_addr().unwrap());
    let mut node = NodeInfo::new("test-cluster");
    node.amqp_listeners = vec![amqp];
    node.management_listener = Some(api);
    node.prometheus_listener = Some(metrics);
    let http = Http::new(broker.clone(), node);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(warren_http::serve(
        api_l,
        http.management_router(),
        rx.clone(),
    ));
    tokio::spawn(warren_http::serve(
        metrics_l,
        http.prometheus_router(),
        rx.clone(),
    ));
    tokio::spawn(server.run(rx));
    Node {
        broker,
        http,
        amqp,
        api,
        metrics,
        _shutdown: tx,
    }
}

impl Node {
    fn add_user(&self, name: &str, tags: &[&str]) {
        self.broker
            .add_user(
                name,
                Some(PasswordHash::new("pw", HashAlgorithm::Sha256)),
                tags.iter().map(|t| t.to_string()).collect(),
            )
            .expect("user");
        self.broker
            .set_permission(name, "/", Permission::full())
            .expect("permission");
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        user: Option<(&str, &str)>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut r = reqwest::Client::new().request(method, format!("http://{}{path}", self.api));
        if let Some((u, p)) = user {
            r = r.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.expect("body"))
    }

    async fn guest(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
        let (s, _, b) = self
            .call(method, path, Some(("guest", "guest")), body)
            .await;
        (s, b)
    }

    async fn get_json(&self, path: &str) -> Value {
        let (s, b) = self.guest(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {b}");
        serde_json::from_str(&b).expect("json")
    }
}

fn parse(b: &str) -> Value {
    serde_json::from_str(b).unwrap_or(Value::Null)
}

#[tokio::test]
async fn logins_and_tags_are_refused_with_rabbitmq_answers() {
    let n = start().await;
    let (s, h, b) = n.call(Method::GET, "/api/overview", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b.is_empty());
    assert_eq!(h["www-authenticate"], "Basic realm=\"RabbitMQ Management\"");

    let (s, h, b) = n
        .call(Method::GET, "/api/overview", Some(("guest", "wrong")), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.contains_key("www-authenticate"));
    assert_eq!(
        parse(&b),
        json!({"error": "not_authorized", "reason": "Login failed"})
    );

    n.add_user("plain", &[]);
    let (s, h, b) = n
        .call(Method::GET, "/api/overview", Some(("plain", "pw")), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(!h.contains_key("www-authenticate"));
    assert_eq!(
        parse(&b),
        json!({"error": "not_authorised", "reason": "Not management user"})
    );

    n.add_user("mgmt", &["management"]);
    let (s, _, b) = n
        .call(Method::GET, "/api/users", Some(("mgmt", "pw")), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(parse(&b)["reason"], "Not administrator user");
    let (s, _, b) = n
        .call(Method::GET, "/api/whoami", Some(("mgmt", "pw")), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(parse(&b), json!({"name": "mgmt", "tags": ["management"]}));
    // A management user does not see a vhost it has no rights in.
    n.broker.add_vhost("hidden").unwrap();
    let (s, _, b) = n
        .call(
            Method::GET,
            "/api/queues/hidden",
            Some(("mgmt", "pw")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        parse(&b)["reason"],
        "User not authorised to access virtual host"
    );

    let (s, _, b) = n
        .call(Method::GET, "/api/nope", Some(("guest", "guest")), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        parse(&b),
        json!({"error": "Object Not Found", "reason": "Not Found"})
    );
}

#[tokio::test]
async fn queues_exchanges_and_bindings_are_declared_listed_and_deleted() {
    let n = start().await;
    let put = |path: &'static str, body: Value| {
        let n = &n;
        async move { n.guest(Method::PUT, path, Some(body)).await }
    };
    let (s, b) = put(
        "/api/queues/%2F/orders",
        json!({"durable": true, "arguments": {"x-max-length": 5}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, _) = put(
        "/api/queues/%2F/orders",
        json!({"durable": true, "arguments": {"x-max-length": 5}}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = put("/api/queues/%2F/orders", json!({"durable": false})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        parse(&b)["reason"],
        "inequivalent arg 'durable' for queue 'orders' in vhost '/': received 'false' but current is 'true'"
    );
    let (s, b) = put("/api/queues/%2F/amq.mine", json!({})).await;
    assert_eq!(
        (s, parse(&b)["reason"].clone()),
        (StatusCode::UNAUTHORIZED, json!("Access refused."))
    );
    let (s, b) = put("/api/queues/nowhere/q", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        parse(&b),
        json!({"error": "not_found", "reason": "vhost_not_found"})
    );

    let (s, _) = put(
        "/api/exchanges/%2F/events",
        json!({"type": "topic", "durable": true}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = put("/api/exchanges/%2F/events", json!({"type": "direct"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    let (s, h, b) = n
        .call(
            Method::POST,
            "/api/bindings/%2F/e/events/q/orders",
            Some(("guest", "guest")),
            Some(json!({"routing_key": "order.*", "arguments": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // The binding's URL relative to the request: destination, then its properties_key.
    assert_eq!(h["location"], "orders/order.%252A");

    let q = n.get_json("/api/queues/%2F/orders").await;
    for key in [
        "name",
        "vhost",
        "type",
        "durable",
        "auto_delete",
        "exclusive",
        "arguments",
    ] {
        assert!(q.get(key).is_some(), "queue lacks {key}: {q}");
    }
    assert_eq!(q["type"], "classic");
    assert_eq!(q["arguments"], json!({"x-max-length": 5}));
    assert_eq!(q["effective_policy_definition"], json!({}));

    let bs = n.get_json("/api/queues/%2F/orders/bindings").await;
    let keys: Vec<&str> = bs
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["properties_key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["orders", "order.%2A"],
        "the default exchange's binding comes first"
    );
    let b = n
        .get_json("/api/bindings/%2F/e/events/q/orders/order.%252A")
        .await;
    assert_eq!(b["routing_key"], "order.*");

    // Publish through the exchange, read it back with get (requeued), then purge.
    let (s, b) = n
        .guest(
            Method::POST,
            "/api/exchanges/%2F/events/publish",
            Some(json!({"properties": {"delivery_mode": 2, "headers": {"h": 1}}, "routing_key": "order.new",
                        "payload": "hello", "payload_encoding": "string"})),
        )
        .await;
    assert_eq!((s, parse(&b)), (StatusCode::OK, json!({"routed": true})));
    let (s, b) = n
        .guest(
            Method::POST,
            "/api/exchanges/%2F/nope/publish",
            Some(json!({"properties": {}, "routing_key": "", "payload": ""})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        parse(&b)["reason"],
        "404 NOT_FOUND - no exchange 'nope' in vhost '/'"
    );
    let (s, b) = n
        .guest(
            Method::POST,
            "/api/queues/%2F/orders/get",
            Some(json!({"count": "5", "ackmode": "ack_requeue_true", "encoding": "auto"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let got = parse(&b);
    assert_eq!(got.as_array().unwrap().len(), 1);
    assert_eq!(got[0]["payload"], "hello");
    assert_eq!(got[0]["routing_key"], "order.new");
    assert_eq!(got[0]["properties"]["delivery_mode"], 2);
    assert_eq!(got[0]["properties"]["headers"]["h"], 1);
    let q = n.get_json("/api/queues/%2F/orders").await;
    assert_eq!(q["messages_ready"], 1, "ack_requeue_true puts it back");
    let (s, _) = n
        .guest(Method::DELETE, "/api/queues/%2F/orders/contents", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(n.get_json("/api/queues/%2F/orders").await["messages"], 0);

    let (s, _) = n
        .guest(
            Method::DELETE,
            "/api/bindings/%2F/e/events/q/orders/order.%252A",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = n
        .guest(Method::DELETE, "/api/exchanges/%2F/events", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = n
        .guest(Method::DELETE, "/api/queues/%2F/orders", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = n.guest(Method::GET, "/api/queues/%2F/orders", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn queue_lists_page_sort_and_filter_on_the_server() {
    let n = start().await;
    for i in 0..12 {
        let (s, _) = n
            .guest(
                Method::PUT,
                &format!("/api/queues/%2F/page.{i:02}"),
                Some(json!({})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let v = n
        .get_json("/api/queues?page=2&page_size=5&name=page&sort=name&sort_reverse=true&columns=name,messages")
        .await;
    assert_eq!(v["total_count"], 12);
    assert_eq!(v["filtered_count"], 12);
    assert_eq!(v["page_count"], 3);
    assert_eq!(v["item_count"], 5);
    assert_eq!(v["items"][0], json!({"name": "page.06", "messages": 0}));
    let (s, b) = n
        .guest(Method::GET, "/api/queues?page=4&page_size=5", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(parse(&b)["error"], "page_out_of_range");
    let plain = n.get_json("/api/queues?columns=name").await;
    assert_eq!(plain.as_array().unwrap().len(), 12);
    // Without statistics, as RabbitMQ lists queues with disable_stats.
    let bare = n
        .get_json("/api/queues/%2F?disable_stats=true&enable_queue_totals=true")
        .await;
    let first = &bare.as_array().unwrap()[0];
    assert_eq!(first["name"], "page.00");
    assert_eq!(first["messages"], 0);
    assert!(first.get("message_stats").is_none() && first.get("messages_details").is_none());
}

#[tokio::test]
async fn users_vhosts_permissions_and_definitions_round_trip() {
    let n = start().await;
    let (s, _) = n
        .guest(Method::PUT, "/api/vhosts/tenant", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = n
        .guest(Method::PUT, "/api/vhosts/tenant", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    // Its creator got full rights in it, as with RabbitMQ.
    let p = n.get_json("/api/permissions/tenant/guest").await;
    assert_eq!(p["configure"], ".*");
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/users/ann",
            Some(json!({"password": "pw"})),
        )
        .await;
    assert_eq!(
        (s, parse(&b)["reason"].clone()),
        (StatusCode::BAD_REQUEST, json!("tags_not_present"))
    );
    let (s, _) = n
        .guest(
            Method::PUT,
            "/api/users/ann",
            Some(json!({"password": "pw", "tags": "management,monitoring"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let u = n.get_json("/api/users/ann").await;
    assert_eq!(u["tags"], json!(["management", "monitoring"]));
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/permissions/tenant/nobody",
            Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
        )
        .await;
    assert_eq!(
        (s, parse(&b)["reason"].clone()),
        (StatusCode::BAD_REQUEST, json!("vhost_or_user_not_found"))
    );
    let (s, _) = n
        .guest(
            Method::PUT,
            "/api/permissions/tenant/ann",
            Some(json!({"configure": "^ann", "write": ".*", "read": ".*"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, _) = n
        .call(
            Method::PUT,
            "/api/queues/tenant/ann.q",
            Some(("ann", "pw")),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "ann may configure ann.*");
    let (s, _, b) = n
        .call(
            Method::PUT,
            "/api/queues/tenant/other",
            Some(("ann", "pw")),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, parse(&b)["reason"].clone()),
        (StatusCode::UNAUTHORIZED, json!("Access refused."))
    );

    let defs = n.get_json("/api/definitions").await;
    assert!(defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "ann.q"));
    assert!(defs["users"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["name"] == "ann"));
    // Into a fresh node: it comes back equal, and ann logs in with the same password.
    let m = start().await;
    let (s, b) = m
        .guest(Method::POST, "/api/definitions", Some(defs.clone()))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    assert_eq!(m.get_json("/api/definitions").await, defs);
    let (s, _, _) = m
        .call(Method::GET, "/api/whoami", Some(("ann", "pw")), None)
        .await;
    assert_eq!(s, StatusCode::OK);

    let (s, _) = n
        .guest(Method::DELETE, "/api/permissions/tenant/ann", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = n.guest(Method::DELETE, "/api/vhosts/tenant", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = n.guest(Method::DELETE, "/api/users/ann", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = n.guest(Method::DELETE, "/api/users/ann", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn connections_channels_and_consumers_are_listed_and_a_connection_closed() {
    use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
    let n = start().await;
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@{}/%2F", n.amqp),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare("live", QueueDeclareOptions::default(), Default::default())
        .await
        .expect("declare");
    // Kept alive: lapin cancels a consumer it drops.
    let _consumer = ch
        .basic_consume(
            "live",
            "tag-1",
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .expect("consume");
    let conns = n.get_json("/api/connections").await;
    assert_eq!(conns.as_array().unwrap().len(), 1);
    let c = &conns[0];
    let name = c["name"].as_str().unwrap().to_owned();
    assert_eq!(
        name,
        format!(
            "{} -> {}",
            c["peer_host"].as_str().unwrap().to_owned() + ":" + &c["peer_port"].to_string(),
            n.amqp
        )
    );
    assert_eq!(c["user"], "guest");
    assert_eq!(c["protocol"], "AMQP 0-9-1");
    assert_eq!(c["channels"], 1);
    assert!(c["client_properties"]["product"].is_string());
    let chans = n.get_json("/api/channels").await;
    assert_eq!(chans[0]["number"], 1, "{chans}");
    assert_eq!(chans[0]["consumer_count"], 1, "{chans}");
    assert_eq!(chans[0]["connection_details"]["name"], name.as_str());
    let cons = n.get_json("/api/consumers").await;
    assert_eq!(cons[0]["consumer_tag"], "tag-1", "{cons} {chans}");
    assert_eq!(cons[0]["queue"], json!({"name": "live", "vhost": "/"}));
    assert!(cons[0]["consumer_timeout"].is_u64());

    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = std::sync::Mutex::new(Some(tx));
    conn.on_error(move |e| {
        if let Some(tx) = tx.lock().unwrap().take() {
            let _ = tx.send(e.to_string());
        }
    });
    let path = format!("/api/connections/{}", urlencode(&name));
    let (s, _, _) = n
        .call(Method::DELETE, &path, Some(("guest", "guest")), None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let err = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("closed")
        .unwrap();
    assert!(
        err.contains("CONNECTION_FORCED") || err.contains("320"),
        "{err}"
    );
    assert!(err.contains("Closed via management plugin"), "{err}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn overview_and_rates_follow_the_counters() {
    let n = start().await;
    let (s, _) = n
        .guest(Method::PUT, "/api/queues/%2F/r", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    n.sample();
    for _ in 0..4 {
        n.guest(
            Method::POST,
            "/api/exchanges/%2F/amq.default/publish",
            Some(json!({"properties": {}, "routing_key": "r", "payload": "x"})),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    n.sample();
    let o = n.get_json("/api/overview").await;
    for key in [
        "cluster_name",
        "node",
        "rabbitmq_version",
        "product_name",
        "listeners",
        "object_totals",
        "queue_totals",
        "churn_rates",
    ] {
        assert!(o.get(key).is_some(), "overview lacks {key}");
    }
    assert_eq!(o["cluster_name"], "test-cluster");
    assert_eq!(o["queue_totals"]["messages_ready"], 4);
    assert_eq!(o["message_stats"]["publish"], 4);
    assert!(
        o["message_stats"]["publish_details"]["rate"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(o["object_totals"]["queues"], 1);
    let q = n.get_json("/api/queues/%2F/r").await;
    assert_eq!(q["message_stats"]["publish"], 4);
    assert!(q["messages_details"]["rate"].as_f64().unwrap() > 0.0);
    // A chart's history: samples newest first, with their mean and rate.
    let o = n
        .get_json("/api/overview?msg_rates_age=60&msg_rates_incr=5&lengths_age=60&lengths_incr=5")
        .await;
    let samples = o["message_stats"]["publish_details"]["samples"]
        .as_array()
        .expect("publish samples");
    assert!(!samples.is_empty(), "{o}");
    assert_eq!(samples[0]["sample"], 4, "{o}");
    assert!(samples[0]["timestamp"].as_u64().unwrap() % 5000 == 0);
    assert!(o["message_stats"]["publish_details"]["avg"].is_number());
    assert!(o["queue_totals"]["messages_ready_details"]["samples"].is_array());
    let v = n.get_json("/api/vhosts/%2F?lengths_age=60").await;
    assert_eq!(
        v["messages_ready_details"]["samples"][0]["sample"], 4,
        "{v}"
    );

    let nodes = n.get_json("/api/nodes").await;
    let node_name = nodes[0]["name"].as_str().unwrap().to_owned();
    let mem = n
        .get_json(&format!("/api/nodes/{}/memory", urlencode(&node_name)))
        .await;
    assert_eq!(mem["memory"]["strategy"], "rss");
    assert!(mem["memory"]["total"]["rss"].as_u64().unwrap() > 0);
    assert!(mem["memory"]["queue_procs"].is_u64());
    for key in [
        "name",
        "uptime",
        "run_queue",
        "processors",
        "os_pid",
        "fd_total",
        "proc_total",
        "mem_limit",
        "mem_alarm",
        "disk_free_limit",
        "disk_free_alarm",
        "rates_mode",
        "enabled_plugins",
        "being_drained",
    ] {
        assert!(nodes[0].get(key).is_some(), "node lacks {key}");
    }
}

impl Node {
    /// The sampler's pass, run now rather than every 5 s.
    fn sample(&self) {
        warren_http::sample_now(&self.http);
    }
}

#[tokio::test]
async fn metrics_speak_rabbitmq_prometheus() {
    let n = start().await;
    n.guest(Method::PUT, "/api/queues/%2F/m%22q", Some(json!({})))
        .await;
    n.guest(
        Method::POST,
        "/api/exchanges/%2F/amq.default/publish",
        Some(json!({"properties": {}, "routing_key": "m\"q", "payload": "12345"})),
    )
    .await;
    let text = reqwest::get(format!("http://{}/metrics", n.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for family in [
        "rabbitmq_identity_info{rabbitmq_node=",
        "rabbitmq_build_info{",
        "rabbitmq_global_messages_received_total{protocol=\"amqp091\"} 1",
        "rabbitmq_global_messages_routed_total{protocol=\"amqp091\"} 1",
        "rabbitmq_global_messages_delivered_total{protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"} 0",
        "rabbitmq_queue_messages_ready 1",
        "rabbitmq_queues 1",
        "rabbitmq_queues_created_total 1",
        "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"100.0\"} 1",
        "rabbitmq_message_size_bytes_bucket{protocol=\"amqp091\",le=\"+Inf\"} 1",
        "rabbitmq_message_size_bytes_sum{protocol=\"amqp091\"} 5",
        "# TYPE rabbitmq_connections gauge",
    ] {
        assert!(text.contains(family), "missing {family}");
    }
    assert!(text.ends_with("\n\n"));
    let per = reqwest::get(format!("http://{}/metrics/per-object", n.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The quote in the queue's name is escaped.
    assert!(
        per.contains("rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"m\\\"q\"} 1"),
        "{per}"
    );
    let detailed = reqwest::get(format!(
        "http://{}/metrics/detailed?family=queue_coarse_metrics&family=queue_metrics",
        n.metrics
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    assert_eq!(
        detailed
            .matches("# TYPE rabbitmq_queue_messages_ready gauge")
            .count(),
        1
    );
    assert!(detailed.contains("rabbitmq_endpoint=\"detailed\""));
}

#[tokio::test]
async fn policies_are_validated_applied_and_shown_on_queues() {
    let n = start().await;
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/policies/%2F/cap",
            Some(json!({"pattern": "^cap"})),
        )
        .await;
    assert_eq!(
        (s, parse(&b)["reason"].clone()),
        (StatusCode::BAD_REQUEST, json!("[{key_missing,definition}]"))
    );
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/policies/%2F/cap",
            Some(json!({"pattern": "^cap", "definition": {"overflow": "foo"}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // RabbitMQ escapes HTML in policy errors.
    assert_eq!(
        parse(&b)["reason"],
        "Validation failed\n\n&lt;&lt;\"foo\"&gt;&gt; is not a valid overflow value\n"
    );
    let (s, _) = n
        .guest(
            Method::PUT,
            "/api/policies/nowhere/cap",
            Some(json!({"pattern": ".", "definition": {"max-length": 1}})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = n
        .guest(Method::PUT, "/api/queues/%2F/cap.q", Some(json!({})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    for _ in 0..5 {
        n.guest(
            Method::POST,
            "/api/exchanges/%2F/amq.default/publish",
            Some(json!({"properties": {}, "routing_key": "cap.q", "payload": "x"})),
        )
        .await;
    }
    let body = json!({"pattern": "^cap", "definition": {"max-length": 2}, "priority": 1, "apply-to": "queues"});
    let (s, _) = n
        .guest(Method::PUT, "/api/policies/%2F/cap", Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = n
        .guest(Method::PUT, "/api/policies/%2F/cap", Some(body))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let q = n.get_json("/api/queues/%2F/cap.q").await;
    assert_eq!(q["policy"], "cap");
    assert_eq!(q["effective_policy_definition"], json!({"max-length": 2}));
    assert_eq!(
        q["messages_ready"], 2,
        "applied to the existing queue at once"
    );
    let p = n.get_json("/api/policies/%2F/cap").await;
    assert_eq!(
        p,
        json!({"vhost": "/", "name": "cap", "pattern": "^cap", "apply-to": "queues",
               "definition": {"max-length": 2}, "priority": 1})
    );
    // Operator policies: administrators only; merged by the smaller value; texts not escaped.
    n.add_user("maker", &["policymaker"]);
    let (s, _, _) = n
        .call(
            Method::PUT,
            "/api/operator-policies/%2F/op",
            Some(("maker", "pw")),
            Some(json!({"pattern": ".", "definition": {"max-length": 1}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = n
        .call(
            Method::PUT,
            "/api/policies/%2F/mine",
            Some(("maker", "pw")),
            Some(json!({"pattern": "^none", "definition": {"max-length": 1}})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "a policymaker may set policies in its vhosts"
    );
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/operator-policies/%2F/op",
            Some(json!({"pattern": ".", "definition": {"queue-mode": "lazy"}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        parse(&b)["reason"],
        "Validation failed\n\n[{<<\"queue-mode\">>,<<\"lazy\">>}] are not recognised policy settings\n"
    );
    let (s, _) = n
        .guest(
            Method::PUT,
            "/api/operator-policies/%2F/op",
            Some(json!({"pattern": ".", "definition": {"max-length": 1}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let q = n.get_json("/api/queues/%2F/cap.q").await;
    assert_eq!(q["operator_policy"], "op");
    assert_eq!(q["messages_ready"], 1);
    let defs = n.get_json("/api/definitions").await;
    assert_eq!(defs["policies"].as_array().unwrap().len(), 2);
    assert_eq!(defs["parameters"][0]["component"], "operator_policy");
    let (s, _) = n
        .guest(Method::DELETE, "/api/operator-policies/%2F/op", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = n.guest(Method::DELETE, "/api/policies/%2F/cap", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        n.get_json("/api/queues/%2F/cap.q").await["policy"],
        Value::Null
    );
}

#[tokio::test]
async fn a_rabbitmq_3_10_export_imports_and_comes_back() {
    let n = start().await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/dev/samples/rabbitmq-3.10/definitions.json"
    );
    let theirs: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (s, b) = n
        .guest(Method::POST, "/api/definitions", Some(theirs.clone()))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let ours = n.get_json("/api/definitions").await;
    // Everything RabbitMQ exported is in Warren's export (Warren keeps `guest` and `/` too).
    let names = |v: &Value, k: &str| -> Vec<String> {
        let mut out: Vec<String> = v[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                format!(
                    "{}|{}",
                    x["vhost"].as_str().unwrap_or(""),
                    x["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        out.sort();
        out
    };
    for key in ["users", "vhosts", "queues", "exchanges", "policies"] {
        let ours = names(&ours, key);
        for item in names(&theirs, key) {
            assert!(ours.contains(&item), "{key}: {item} missing from {ours:?}");
        }
    }
    assert_eq!(
        ours["bindings"].as_array().unwrap().len(),
        theirs["bindings"].as_array().unwrap().len()
    );
    // Limits and operator policies came along as parameters, user limits with their users.
    let params = ours["parameters"].as_array().unwrap();
    assert!(params.iter().any(|p| p["component"] == "vhost-limits"));
    assert!(params.iter().any(|p| p["component"] == "operator_policy"));
    let limits = n.get_json("/api/vhost-limits/%2F").await;
    assert_eq!(
        limits,
        json!([{"vhost": "/", "value": {"max-connections": 200, "max-queues": 500}}])
    );
    // A user created from a RabbitMQ password hash logs in with its password.
    let (s, _, _) = n
        .call(Method::GET, "/api/whoami", Some(("admin2", "secret")), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    // Limits over HTTP: RabbitMQ's codes and texts.
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/vhost-limits/%2F/max-bogus",
            Some(json!({"value": 5})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        parse(&b)["reason"],
        "Validation failed\n\nUnrecognised terms [{<<\"max-bogus\">>,5}] in limits\n"
    );
    let (s, _) = n
        .guest(
            Method::PUT,
            "/api/user-limits/guest/max-channels",
            Some(json!({"value": 7})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(n
        .get_json("/api/user-limits")
        .await
        .as_array()
        .unwrap()
        .contains(&json!({"user": "guest", "value": {"max-channels": 7}})));
    let (s, _) = n
        .guest(Method::DELETE, "/api/user-limits/guest/max-channels", None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn each_tag_sees_and_does_what_rabbitmq_allows() {
    use lapin::options::QueueDeclareOptions;
    let n = start().await;
    n.add_user("mgmt", &["management"]);
    n.add_user("mon", &["monitoring"]);
    n.add_user("maker", &["policymaker"]);
    // guest's connection: only administrators and monitoring users see it.
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@{}/%2F", n.amqp),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare("seen", QueueDeclareOptions::default(), Default::default())
        .await
        .expect("declare");
    let count = |user: &'static str, path: &'static str| {
        let n = &n;
        async move {
            let (s, _, b) = n.call(Method::GET, path, Some((user, "pw")), None).await;
            (s, parse(&b).as_array().map_or(0, |a| a.len()))
        }
    };
    assert_eq!(count("mgmt", "/api/connections").await, (StatusCode::OK, 0));
    assert_eq!(count("mon", "/api/connections").await, (StatusCode::OK, 1));
    assert_eq!(count("mgmt", "/api/channels").await, (StatusCode::OK, 0));
    assert_eq!(count("mon", "/api/channels").await, (StatusCode::OK, 1));
    assert_eq!(
        count("mgmt", "/api/queues").await,
        (StatusCode::OK, 1),
        "rights on / show its queues"
    );
    assert_eq!(
        count("mgmt", "/api/nodes").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(count("mon", "/api/nodes").await, (StatusCode::OK, 1));
    assert_eq!(count("mon", "/api/users").await.0, StatusCode::UNAUTHORIZED);
    // Closing someone else's connection takes an administrator.
    let name = n.broker.connections()[0].info.name.clone();
    let path = format!("/api/connections/{}", urlencode(&name));
    let (s, _, _) = n
        .call(Method::DELETE, &path, Some(("mon", "pw")), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Policies: policymakers (and administrators), not management or monitoring users.
    let body = json!({"pattern": "^x", "definition": {"max-length": 1}});
    for (user, want) in [
        ("mgmt", StatusCode::UNAUTHORIZED),
        ("mon", StatusCode::UNAUTHORIZED),
        ("maker", StatusCode::CREATED),
    ] {
        let (s, _, _) = n
            .call(
                Method::PUT,
                "/api/policies/%2F/p",
                Some((user, "pw")),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, want, "{user}");
    }
    // Users, vhosts and definitions: administrators only.
    for path in ["/api/users", "/api/definitions", "/api/permissions"] {
        let (s, _, _) = n.call(Method::GET, path, Some(("maker", "pw")), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (s, _, _) = n
        .call(
            Method::PUT,
            "/api/vhosts/v2",
            Some(("maker", "pw")),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    drop(conn);
}

#[tokio::test]
async fn topic_permissions_are_managed_exported_and_enforced() {
    use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
    let n = start().await;
    n.add_user("alice", &["management"]);
    let rule = json!({"exchange": "amq.topic", "write": "^{username}\\.", "read": "^public\\."});
    let (s, b) = n
        .guest(Method::PUT, "/api/topic-permissions/%2F/alice", Some(rule))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/topic-permissions/%2F/alice",
            Some(json!({"exchange": "amq.topic", "write": "("})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(parse(&b)["reason"], "[{key_missing,read}]");
    let list = n.get_json("/api/topic-permissions").await;
    assert_eq!(
        list,
        json!([{"user": "alice", "vhost": "/", "exchange": "amq.topic",
                "write": "^{username}\\.", "read": "^public\\."}])
    );
    assert_eq!(n.get_json("/api/users/alice/topic-permissions").await, list);
    assert_eq!(n.get_json("/api/vhosts/%2F/topic-permissions").await, list);
    assert_eq!(n.get_json("/api/topic-permissions/%2F/alice").await, list);
    let defs = n.get_json("/api/definitions").await;
    assert_eq!(defs["topic_permissions"], list);
    // Only administrators manage them.
    let (s, _, _) = n
        .call(
            Method::GET,
            "/api/topic-permissions",
            Some(("alice", "pw")),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Enforced over AMQP: publishing checks `write` against the routing key, binding `read`.
    let conn = lapin::Connection::connect(
        &format!("amqp://alice:pw@{}/%2F", n.amqp),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    let q = ch
        .queue_declare("", QueueDeclareOptions::default(), Default::default())
        .await
        .expect("declare");
    ch.queue_bind(
        q.name().as_str(),
        "amq.topic",
        "public.news",
        QueueBindOptions::default(),
        Default::default(),
    )
    .await
    .expect("bind with a readable key");
    ch.basic_publish(
        "amq.topic",
        "alice.x",
        BasicPublishOptions::default(),
        b"ok",
        Default::default(),
    )
    .await
    .expect("publish");
    // Other exchanges have no rule: anything goes.
    ch.basic_publish(
        "amq.direct",
        "bob.x",
        BasicPublishOptions::default(),
        b"ok",
        Default::default(),
    )
    .await
    .expect("publish");
    ch.queue_declare("probe", QueueDeclareOptions::default(), Default::default())
        .await
        .expect("channel still open");
    let err = ch
        .queue_bind(
            q.name().as_str(),
            "amq.topic",
            "secret.#",
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .expect_err("bind refused");
    let text = err.to_string();
    assert!(text.contains("ACCESS_REFUSED"), "{text}");
    assert!(
        text.contains("read access to topic 'secret.#' in exchange 'amq.topic' in vhost '/' refused for user 'alice'"),
        "{text}"
    );
    // With confirms on, the refused publish's confirm fails with the channel's close reason
    // (a later method could find the channel already gone and not say why).
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let confirm = ch
        .basic_publish(
            "amq.topic",
            "bob.x",
            BasicPublishOptions::default(),
            b"no",
            Default::default(),
        )
        .await
        .expect("sent");
    let err = confirm
        .await
        .expect_err("the channel was closed by the refused publish");
    assert!(
        err.to_string().contains(
            "write access to topic 'bob.x' in exchange 'amq.topic' in vhost '/' refused for user 'alice'"
        ),
        "{err}"
    );

    // Cleared per exchange; a new connection is free again.
    let (s, _) = n
        .guest(
            Method::DELETE,
            "/api/topic-permissions/%2F/alice?exchange=amq.topic",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(n.get_json("/api/topic-permissions").await, json!([]));
    let (s, _) = n
        .guest(Method::GET, "/api/topic-permissions/%2F/alice", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn runtime_parameters_show_vhost_limits() {
    let n = start().await;
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/parameters/vhost-limits/%2F/limits",
            Some(json!({"value": {"max-queues": 10}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        n.get_json("/api/vhost-limits/%2F").await,
        json!([{"vhost": "/", "value": {"max-queues": 10}}])
    );
    let expected = json!([{"vhost": "/", "component": "vhost-limits", "name": "limits",
                           "value": {"max-queues": 10}}]);
    assert_eq!(n.get_json("/api/parameters").await, expected);
    assert_eq!(n.get_json("/api/parameters/vhost-limits").await, expected);
    assert_eq!(
        n.get_json("/api/parameters/vhost-limits/%2F").await,
        expected
    );
    assert_eq!(
        n.get_json("/api/parameters/federation-upstream").await,
        json!([])
    );
    // Replacing drops what the new value leaves out.
    let (s, _) = n
        .guest(
            Method::PUT,
            "/api/parameters/vhost-limits/%2F/limits",
            Some(json!({"value": {"max-connections": 5}})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        n.get_json("/api/parameters/vhost-limits/%2F/limits").await["value"],
        json!({"max-connections": 5})
    );
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/parameters/shovel/%2F/s1",
            Some(json!({"value": {}})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        parse(&b)["reason"],
        "Validation failed\n\ncomponent shovel not found\n"
    );
    let (s, _) = n
        .guest(
            Method::DELETE,
            "/api/parameters/vhost-limits/%2F/limits",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(n.get_json("/api/parameters").await, json!([]));
    let g = n.get_json("/api/global-parameters").await;
    assert_eq!(
        g[0],
        json!({"name": "cluster_name", "value": "test-cluster"})
    );
    assert_eq!(
        n.get_json("/api/global-parameters/internal_cluster_id")
            .await["value"],
        "rabbitmq-cluster-id-test-cluster"
    );
}

#[tokio::test]
async fn vhost_metadata_is_kept_exported_and_sets_the_default_queue_type() {
    let n = start().await;
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/vhosts/meta",
            Some(
                json!({"description": "orders", "tags": "prod,eu", "default_queue_type": "quorum"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let v = n.get_json("/api/vhosts/meta").await;
    assert_eq!(v["description"], "orders");
    assert_eq!(v["tags"], json!(["prod", "eu"]));
    assert_eq!(v["default_queue_type"], "quorum");
    assert_eq!(
        v["metadata"],
        json!({"description": "orders", "tags": ["prod", "eu"], "default_queue_type": "quorum"})
    );
    // A durable queue declared without a type gets the vhost's; others stay classic.
    let (s, b) = n
        .guest(
            Method::PUT,
            "/api/queues/meta/typed",
            Some(json!({"durable": true})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let q = n.get_json("/api/queues/meta/typed").await;
    assert_eq!(q["type"], "quorum", "{q}");
    assert_eq!(q["arguments"]["x-queue-type"], "quorum");
    n.guest(
        Method::PUT,
        "/api/queues/meta/passing",
        Some(json!({"durable": false, "auto_delete": true})),
    )
    .await;
    assert_eq!(
        n.get_json("/api/queues/meta/passing").await["type"],
        "classic"
    );
    // 3.11-style `metadata`, and a bad type.
    let (s, _) = n
        .guest(
            Method::PUT,
            "/api/vhosts/meta",
            Some(json!({"metadata": {"description": "changed", "tags": ["x"]}})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        n.get_json("/api/vhosts/meta").await["description"],
        "changed"
    );
    let (s, _) = n
        .guest(
            Method::PUT,
            "/api/vhosts/meta",
            Some(json!({"default_queue_type": "fancy"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Carried by definitions, both ways.
    let defs = n.get_json("/api/definitions").await;
    let exported = defs["vhosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "meta")
        .cloned()
        .expect("exported");
    assert_eq!(exported["metadata"]["description"], "changed");
    let (s, b) = n
        .guest(
            Method::POST,
            "/api/definitions",
            Some(json!({"vhosts": [{"name": "imported", "metadata": {"description": "d", "tags": ["t"], "default_queue_type": "stream"}}]})),
        )
        .await;
    assert!(s.is_success(), "{b}");
    let v = n.get_json("/api/vhosts/imported").await;
    assert_eq!(v["description"], "d");
    assert_eq!(v["default_queue_type"], "stream");
}

#[tokio::test]
async fn a_queue_and_a_channel_list_their_consumers() {
    use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
    let n = start().await;
    let conn = lapin::Connection::connect(
        &format!("amqp://guest:guest@{}/%2F", n.amqp),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_declare(
        "watched",
        QueueDeclareOptions::default(),
        Default::default(),
    )
    .await
    .expect("declare");
    let _consumer = ch
        .basic_consume(
            "watched",
            "eyes",
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .expect("consume");
    let q = n.get_json("/api/queues/%2F/watched").await;
    assert_eq!(q["consumer_details"][0]["consumer_tag"], "eyes", "{q}");
    let channel_name = q["consumer_details"][0]["channel_details"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = n
        .get_json(&format!("/api/channels/{}", urlencode(&channel_name)))
        .await;
    assert_eq!(c["consumer_details"][0]["queue"]["name"], "watched", "{c}");
}
