"""Dashboard check: evaluates every targets[].expr of a Grafana dashboard JSON against a Prometheus
(http://127.0.0.1:19798) with the template variables substituted, and prints the result count.
Usage: check_dashboard.py DASHBOARD.json [RABBITMQ_CLUSTER] [ENDPOINT]"""
import json, sys, urllib.request, urllib.parse
PROM = "http://127.0.0.1:19798"
def q(expr):
    url = PROM + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    r = json.load(urllib.request.urlopen(url))
    if r["status"] != "success": return None, r
    return r["data"]["result"], None
def label_values(metric, label):
    url = PROM + "/api/v1/series?" + urllib.parse.urlencode({"match[]": metric})
    r = json.load(urllib.request.urlopen(url))
    return sorted({s.get(label) for s in r["data"] if label in s})
d = json.load(open(sys.argv[1]))
ns = label_values('rabbitmq_identity_info', 'namespace')
cl = label_values('rabbitmq_identity_info', 'rabbitmq_cluster')
ep = label_values('rabbitmq_identity_info', 'rabbitmq_endpoint')
print("template vars: namespace=%r rabbitmq_cluster=%r endpoint=%r" % (ns, cl, ep))
CL = sys.argv[2] if len(sys.argv) > 2 else (cl[0] if cl else "")
EP = sys.argv[3] if len(sys.argv) > 3 else (ep[0] if ep else "")
subs = {"$namespace": ns[0] if ns else "", "$rabbitmq_cluster": CL,
        "$endpoint": EP, "$__rate_interval": "1m", "$__range": "2m"}
def panels(ps):
    for p in ps:
        if p.get("type") == "row": yield from panels(p.get("panels", []))
        yield p
for p in panels(d["panels"]):
    for t in p.get("targets", []):
        e = t.get("expr")
        if not e: continue
        for k in sorted(subs, key=len, reverse=True): e = e.replace(k, subs[k])
        res, err = q(e)
        if err: print("ERROR", p.get("title"), err); continue
        vals = [r["value"][1] for r in res]
        print("%-45s %-12s n=%d %s" % ((p.get("title") or "(table)")[:45], t.get("legendFormat","")[:12], len(res), vals[:3]))
