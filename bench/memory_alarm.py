#!/usr/bin/env python3
"""Stalled large publishes against the memory alarm (issue 12, fault 1).

N connections each publish one message of SIZE bytes but send all of its body except the last
byte, stall for STALL seconds and close. Prints Warren's peak RSS while they stall, its RSS
after they have gone, and whether the memory alarm cleared (read from /api/nodes).

    bench/memory_alarm.py --warren target/release/warren [--connections 120] [--size 16777216]
        [--watermark 500000000] [--stall 8]
"""

import argparse
import base64
import json
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request

FRAME_END = b"\xce"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel, class_id, method_id, args=b""):
    return frame(1, channel, struct.pack(">HH", class_id, method_id) + args)


def shortstr(s):
    b = s.encode()
    return struct.pack(">B", len(b)) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def read_frame(sock):
    head = b""
    while len(head) < 7:
        chunk = sock.recv(7 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    kind, channel, size = struct.unpack(">BHI", head)
    body = b""
    while len(body) < size + 1:
        chunk = sock.recv(size + 1 - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return kind, channel, body[:-1]


def handshake(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"AMQP\x00\x00\x09\x01")
    read_frame(s)  # connection.start
    s.sendall(method(0, 10, 11, struct.pack(">I", 0) + shortstr("PLAIN")
                     + longstr(b"\x00guest\x00guest") + shortstr("en_US")))
    _, _, tune = read_frame(s)
    channel_max, frame_max, heartbeat = struct.unpack(">HIH", tune[4:12])
    s.sendall(method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
    s.sendall(method(0, 10, 40, shortstr("/") + shortstr("") + b"\x00"))
    read_frame(s)  # open-ok
    s.sendall(method(1, 20, 10, shortstr("")))
    read_frame(s)  # channel.open-ok
    return s, frame_max


def stalled_publish(port, size, stall, errors):
    try:
        s, frame_max = handshake(port)
        s.sendall(method(1, 60, 40, struct.pack(">H", 0) + shortstr("") + shortstr("stalled")
                         + b"\x00"))
        s.sendall(frame(2, 1, struct.pack(">HHQH", 60, 0, size, 0)))
        chunk = frame_max - 8
        left = size - 1
        s.settimeout(stall + 30)
        while left > 0:
            n = min(chunk, left)
            s.sendall(frame(3, 1, b"\x07" * n))
            left -= n
        time.sleep(stall)
        s.close()
    except OSError as e:
        # A broker that stops reading leaves the sender blocked until the stall ends; that
        # is the behaviour wanted, not an error.
        errors.append(repr(e))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def api(mgmt, path):
    req = urllib.request.Request(f"http://127.0.0.1:{mgmt}{path}", headers={
        "authorization": "Basic " + base64.b64encode(b"guest:guest").decode()})
    return json.load(urllib.request.urlopen(req, timeout=5))


def mem_alarm(mgmt):
    return api(mgmt, "/api/nodes")[0]["mem_alarm"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--warren", default="target/release/warren")
    ap.add_argument("--connections", type=int, default=120)
    ap.add_argument("--size", type=int, default=16 * 1024 * 1024)
    ap.add_argument("--watermark", type=int, default=500_000_000)
    ap.add_argument("--stall", type=float, default=8)
    args = ap.parse_args()
    port, mgmt = free_port(), free_port()
    data = tempfile.mkdtemp(prefix="memory-alarm-")
    proc = subprocess.Popen([args.warren, "--amqp-listen", f"127.0.0.1:{port}",
                             "--management-listen", f"127.0.0.1:{mgmt}",
                             "--prometheus-listen", "none",
                             "--data-dir", os.path.join(data, "data"),
                             "--memory-high-watermark", str(args.watermark)],
                            stderr=open(os.path.join(data, "warren.log"), "w"))
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", mgmt)).close()
                break
            except OSError:
                time.sleep(0.1)
        errors = []
        threads = [threading.Thread(target=stalled_publish,
                                    args=(port, args.size, args.stall, errors))
                   for _ in range(args.connections)]
        start = time.time()
        for t in threads:
            t.start()
        peak = 0
        while any(t.is_alive() for t in threads):
            peak = max(peak, rss_kib(proc.pid))
            time.sleep(0.1)
        took = time.time() - start
        cleared_after = None
        t0 = time.time()
        while time.time() - t0 < 10:
            if not mem_alarm(mgmt):
                cleared_after = time.time() - t0
                break
            time.sleep(0.2)
        after = rss_kib(proc.pid)
        connections_after = api(mgmt, "/api/overview")["object_totals"]["connections"]
        print(json.dumps({
            "connections": args.connections, "size": args.size, "watermark": args.watermark,
            "peak_rss_mib": round(peak / 1024), "rss_after_mib": round(after / 1024),
            "alarm_cleared_after_s": None if cleared_after is None else round(cleared_after, 1),
            "publish_phase_s": round(took, 1), "client_errors": len(errors),
            "connections_after": connections_after,
        }))
    finally:
        proc.terminate()
        proc.wait(timeout=15)


if __name__ == "__main__":
    main()
