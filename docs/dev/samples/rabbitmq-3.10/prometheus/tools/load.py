"""Load generator used for the captures in this directory (RabbitMQ 3.10.8 on 127.0.0.1:5698).

Before running: rabbitmqctl add_vhost other; set_permissions -p other guest '.*' '.*' '.*'.
Usage: python3 load.py [HOLD_SECONDS]  (keeps the connections open while you scrape)
"""
import pika, time, sys
params = pika.ConnectionParameters(host="127.0.0.1", port=5698)
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.confirm_delivery()
ch.queue_declare("prom.q1", durable=True)
ch.queue_declare("prom.qq", durable=True, arguments={"x-queue-type": "quorum"})
ch.queue_declare("prom.q1", durable=True)  # redeclare: declared_total++ but not created_total
ch.queue_declare("prom.tmp", auto_delete=False)
ch.queue_delete("prom.tmp")                 # deleted_total++
sizes = [10, 50, 200, 2000, 20000, 200000]
# 12 confirmed persistent publishes to prom.q1, 3 to the quorum queue
for i in range(12):
    ch.basic_publish("", "prom.q1", b"x" * sizes[i % len(sizes)], pika.BasicProperties(delivery_mode=2))
for i in range(3):
    ch.basic_publish("", "prom.qq", b"q" * 100, pika.BasicProperties(delivery_mode=2))
# unroutable mandatory (returned) and non-mandatory (dropped) to amq.direct
try:
    ch.basic_publish("amq.direct", "nowhere", b"unroutable", mandatory=True)
except pika.exceptions.UnroutableError:
    print("mandatory unroutable returned (expected)")
ch.basic_publish("amq.direct", "nowhere", b"dropped", mandatory=False)
# basic.get manual ack, basic.get auto ack, basic.get empty
ch2 = conn.channel()
m, p, b = ch2.basic_get("prom.q1", auto_ack=False); ch2.basic_ack(m.delivery_tag)
m, p, b = ch2.basic_get("prom.q1", auto_ack=True)
ch2.queue_declare("prom.empty")
m, p, b = ch2.basic_get("prom.empty", auto_ack=False); assert m is None
# consume with manual ack: ack 3, nack+requeue 1; cancel() requeues what else was prefetched
ch3 = conn.channel()
ch3.basic_qos(prefetch_count=4)
got = []
for m, p, b in ch3.consume("prom.q1", auto_ack=False, inactivity_timeout=2):
    if m is None: break
    got.append(m)
    if len(got) == 4: break
for m in got[:3]: ch3.basic_ack(m.delivery_tag)
ch3.basic_nack(got[3].delivery_tag, requeue=True)
ch3.cancel()
# a long-lived manual-ack consumer holding 2 unacked messages while we scrape
ch4 = conn.channel()
ch4.basic_qos(prefetch_count=2)
ch4.basic_consume("prom.q1", lambda c, m, p, b: None, auto_ack=False)
# an auto-ack consumer on the quorum queue
ch5 = conn.channel()
ch5.basic_consume("prom.qq", lambda c, m, p, b: None, auto_ack=True)
# a non-confirm publisher in vhost "other"
conn2 = pika.BlockingConnection(pika.ConnectionParameters(host="127.0.0.1", port=5698, virtual_host="other"))
o = conn2.channel()
o.queue_declare("other.q")
for i in range(5):
    o.basic_publish("", "other.q", b"o" * 300)
print("load done; holding connections open", flush=True)
hold = float(sys.argv[1]) if len(sys.argv) > 1 else 90
t0 = time.time()
while time.time() - t0 < hold:
    conn.process_data_events(time_limit=1)
    conn2.process_data_events(time_limit=0)
conn2.close(); conn.close()
print("closed")
