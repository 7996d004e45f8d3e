"""Minimal rabbitmq_prometheus-shaped exporter used to check the 'minimal set' against the dashboards."""
import http.server, time, sys
LE_STYLE = sys.argv[1] if len(sys.argv) > 1 else "int"   # "int" = RabbitMQ 4.1+ (le="100"), "float" = normalized (le="100.0")
T0 = time.time()
BOUNDS = [100, 1000, 10000, 100000, 1000000, 10000000, 50000000, 100000000]
def le_str(b):
    if LE_STYLE == "int": return str(b)
    return {100:"100.0",1000:"1000.0",10000:"10000.0",100000:"100000.0",1000000:"1e+06",10000000:"1e+07",50000000:"5e+07",100000000:"1e+08"}[b]
def body():
    t = time.time() - T0; n = int(t * 10)
    L = []
    def fam(name, typ, help_, samples):
        L.append("# TYPE %s %s" % (name, typ)); L.append("# HELP %s %s" % (name, help_))
        for labels, v in samples:
            L.append("%s%s %s" % (name, ("{" + labels + "}") if labels else "", v))
    g = lambda name, v, h="x": fam(name, "gauge", h, [("", v)])
    c = lambda name, v, h="x": fam(name, "counter", h, [("", v)])
    c("rabbitmq_connections_opened_total", n // 10); c("rabbitmq_connections_closed_total", n // 20)
    c("rabbitmq_channels_opened_total", n // 5); c("rabbitmq_channels_closed_total", n // 6)
    c("rabbitmq_queues_declared_total", n // 3); c("rabbitmq_queues_created_total", n // 4); c("rabbitmq_queues_deleted_total", n // 5)
    g("rabbitmq_process_open_fds", 40); g("rabbitmq_process_open_tcp_sockets", 3)
    g("rabbitmq_process_resident_memory_bytes", 50000000); g("rabbitmq_disk_space_available_bytes", 80000000000)
    g("rabbitmq_process_max_fds", 1024); g("rabbitmq_process_max_tcp_sockets", 832)
    g("rabbitmq_resident_memory_limit_bytes", 10000000000); g("rabbitmq_disk_space_available_limit_bytes", 50000000)
    g("rabbitmq_erlang_uptime_seconds", round(t, 3))
    g("rabbitmq_queue_messages_ready", 7); g("rabbitmq_queue_messages_unacked", 2)
    g("rabbitmq_channel_consumers", 1)
    g("rabbitmq_connections", 2); g("rabbitmq_channels", 3); g("rabbitmq_consumers", 1); g("rabbitmq_queues", 4)
    fam("rabbitmq_build_info", "untyped", "x", [('rabbitmq_version="3.10.8",prometheus_plugin_version="3.10.8",prometheus_client_version="4.9.1",erlang_version="warren"', 1)])
    fam("rabbitmq_identity_info", "untyped", "x", [('rabbitmq_node="warren@localhost",rabbitmq_cluster="warren-%s",rabbitmq_cluster_permanent_id="rabbitmq-cluster-id-x",rabbitmq_endpoint="aggregated"' % LE_STYLE, 1)])
    P = 'protocol="amqp091"'
    fam("rabbitmq_global_consumers", "gauge", "x", [(P, 1)]); fam("rabbitmq_global_publishers", "gauge", "x", [(P, 1)])
    for name in ["received", "received_confirm", "routed", "confirmed", "unroutable_dropped", "unroutable_returned"]:
        fam("rabbitmq_global_messages_%s_total" % name, "counter", "x", [(P, n)])
    for name in ["delivered", "delivered_consume_manual_ack", "delivered_consume_auto_ack", "delivered_get_manual_ack",
                 "delivered_get_auto_ack", "get_empty", "redelivered", "acknowledged"]:
        fam("rabbitmq_global_messages_%s_total" % name, "counter", "x",
            [(P + ',queue_type="%s"' % qt, n if qt == "rabbit_classic_queue" else 0)
             for qt in ["rabbit_classic_queue", "rabbit_quorum_queue", "rabbit_stream_queue"]])
    # histogram: n messages, 1/4 in each of the first four buckets
    L.append("# TYPE rabbitmq_message_size_bytes histogram"); L.append("# HELP rabbitmq_message_size_bytes Size of messages received from publishers")
    cum = 0
    for i, b in enumerate(BOUNDS):
        cum += n // 4 if i < 4 else 0
        L.append('rabbitmq_message_size_bytes_bucket{%s,le="%s"} %d' % (P, le_str(b), cum))
    L.append('rabbitmq_message_size_bytes_bucket{%s,le="+Inf"} %d' % (P, cum))
    L.append('rabbitmq_message_size_bytes_count{%s} %d' % (P, cum)); L.append('rabbitmq_message_size_bytes_sum{%s} %d' % (P, cum * 300))
    return ("\n".join(L) + "\n").encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = body(); self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4"); self.send_header("content-length", str(len(b)))
        self.end_headers(); self.wfile.write(b)
    def log_message(self, *a): pass
port = int(sys.argv[2]) if len(sys.argv) > 2 else 19799
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
