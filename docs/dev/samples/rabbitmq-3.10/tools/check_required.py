import json, sys, os
D = sys.argv[1]
# required JSON keys per rabbitmq_http_client 0.90 struct (non-Option, no serde(default)); nested dicts are sub-structs
REQ = {
 "ClusterNode": ["name","uptime","run_queue","processors","os_pid","fd_total","proc_total","mem_limit","mem_alarm","disk_free_limit","disk_free_alarm","rates_mode","enabled_plugins","being_drained"],
 "Connection": ["name","node","protocol","user","connected_at","client_properties"],
 "Channel": ["number","name",{"connection_details":["name","peer_host","peer_port"]},"vhost","state","consumer_count","confirm","prefetch_count","messages_unacknowledged","messages_unconfirmed"],
 "Consumer": ["consumer_tag","active","ack_required","prefetch_count","exclusive","arguments","consumer_timeout",{"queue":["name","vhost"]},{"channel_details":["number","name","connection_name","node","peer_host","peer_port","user"]}],
 "ExchangeInfo": ["name","vhost","type","durable","auto_delete","arguments"],
 "QueueInfo": ["name","vhost","type","durable","auto_delete","exclusive","arguments"],
 "BindingInfo": ["vhost","source","destination","destination_type","routing_key","arguments"],
 "VirtualHost": ["name"],
 "User": ["name","tags","password_hash"],
 "CurrentUser": ["name","tags"],
 "Permissions": ["user","vhost","configure","read","write"],
 "TopicPermission": ["user","vhost","exchange","read","write"],
 "Policy": ["name","vhost","pattern","apply-to","priority","definition"],
 "VirtualHostLimits": ["vhost","value"],
 "UserLimits": ["user","value"],
 "ClusterIdentity": ["name"],
 "ClusterDefinitionSet": ["users","vhosts","permissions","parameters","policies","queues","exchanges","bindings"],
 "VirtualHostDefinitionSet": ["parameters","policies","queues","exchanges","bindings"],
 "GlobalRuntimeParameter": ["name","value"],
 "FeatureFlag": ["name","state","desc","doc_url","stability","provided_by"],
 "AuthenticationAttemptStatistics": ["protocol","auth_attempts","auth_attempts_failed","auth_attempts_succeeded"],
 "Listener": ["node","protocol","port","ip_address"],
 "NodeMemoryBreakdown": ["connection_readers","connection_writers","connection_channels","connection_other","queue_procs","quorum_queue_procs","stream_queue_procs","stream_queue_replica_reader_procs","stream_queue_coordinator_procs","plugins","metadata_store","other_proc","metrics","mgmt_db","mnesia","quorum_ets","metadata_store_ets","other_ets","binary","msg_index","code","atom","other_system","allocated_unused","reserved_unallocated","strategy",{"total":["rss","allocated","erlang"]}],
}
FILES = {
 "ClusterNode": ["nodes.json","node.json"], "Connection": ["connections.json","connection.json","connections-vhost.json"],
 "Channel": ["channels.json","channels-vhost.json","connection-channels.json","channel.json"], "Consumer": ["consumers.json","consumers-vhost.json"],
 "ExchangeInfo": ["exchanges.json","exchange.json"], "QueueInfo": ["queues.json","queue-classic.json","queue-quorum.json","queues-disable-stats.json","queues-disable-stats-totals.json"],
 "BindingInfo": ["bindings.json","queue-bindings.json","exchange-bindings-source.json","bindings-e-q.json"], "VirtualHost": ["vhosts.json","vhost.json"],
 "User": ["users.json","user.json","users-without-permissions.json"], "CurrentUser": ["whoami.json","whoami-mgmt-user.json"],
 "Permissions": ["permissions.json","permission.json","user-permissions.json","vhost-permissions.json"], "TopicPermission": ["topic-permissions.json"],
 "Policy": ["policies.json","policy.json","operator-policies.json","operator-policy.json"], "VirtualHostLimits": ["vhost-limits.json","vhost-limits-vhost.json"],
 "UserLimits": ["user-limits.json","user-limits-user.json"], "ClusterIdentity": ["cluster-name.json"],
 "ClusterDefinitionSet": ["definitions.json"], "VirtualHostDefinitionSet": ["definitions-vhost.json"], "GlobalRuntimeParameter": ["global-parameters.json","global-parameter.json"],
 "FeatureFlag": ["feature-flags.json"], "AuthenticationAttemptStatistics": ["auth-attempts.json"],
}
def check(obj, req, path=""):
    miss = []
    for r in req:
        if isinstance(r, dict):
            (k, sub), = r.items()
            if k not in obj: miss.append(path+k)
            elif isinstance(obj[k], dict) and obj[k]: miss += check(obj[k], sub, path+k+".")
        elif r not in obj: miss.append(path+r)
    return miss
for s, files in FILES.items():
    for f in files:
        p = os.path.join(D, f)
        if not os.path.exists(p): continue
        d = json.load(open(p))
        items = d if isinstance(d, list) else (d["items"] if isinstance(d, dict) and "items" in d else [d])
        missing = set()
        for it in items: missing |= set(check(it, REQ[s]))
        print(f"{s:28} {f:34} {len(items):3} items  missing: {sorted(missing) if missing else '-'}")
ov = json.load(open(os.path.join(D, "overview.json")))
print("Listener in overview missing:", {m for l in ov["listeners"] for m in check(l, REQ["Listener"])} or "-")
nm = json.load(open(os.path.join(D, "node-memory.json")))
print("NodeMemoryBreakdown missing:", check(nm["memory"], REQ["NodeMemoryBreakdown"]) if isinstance(nm.get("memory"), dict) else nm)
