#!/usr/bin/env python3
"""RSS of a holdfast server before and after N topic publishes (no subscribers), over the admin
listener with one keep-alive HTTP connection. Usage: history_mem.py ADMIN_PORT PID TOPICS PER_TOPIC PAYLOAD_BYTES"""
import http.client, json, sys, time

port, pid, topics, per_topic, payload_bytes = map(int, sys.argv[1:6])

def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

conn = http.client.HTTPConnection("127.0.0.1", port)
def publish(topic):
    body = json.dumps({"target": "topic", "topic": topic, "payload": "x" * payload_bytes})
    conn.request("POST", "/publish", body, {"Content-Type": "application/json"})
    r = conn.getresponse(); r.read()
    assert r.status == 202, r.status

for t in range(topics):  # warm-up: other topics, same sizes
    publish(f"warm-{t}")
time.sleep(0.5)
before = rss_kib()
start = time.time()
for _ in range(per_topic):
    for t in range(topics):
        publish(f"topic-{t}")
time.sleep(0.5)
after = rss_kib()
n = topics * per_topic
print(json.dumps({"messages": n, "rss_before_kib": before, "rss_after_kib": after,
                  "delta_bytes": (after - before) * 1024, "bytes_per_message": (after - before) * 1024 / n,
                  "publish_s": round(time.time() - start, 1)}))
