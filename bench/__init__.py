"""Sami benchmarks: `python -m bench [--quick] [--only NAME ...] [--profile]`.

Numbers, not assertions. Every figure runs the control plane (or the baseline server) in a
process of its own and the simulated agents and clients in other processes, and each has
its baseline measured in the same run on the same machine:

1. echo       bare grpc.aio unary echo calls/s and bidi round trips/s; SQLite commits/s
2. create     CreateDeployment calls/s with auth, audit and the durable store; p50/p99
3. lifecycle  create -> assign -> ack -> 3 progress -> result -> a watcher sees the end
4. pickup     CreateDeployment returned -> the agent holds the assignment (1,000 agents)
5. idle       control-plane RSS and CPU with 5,000 connected idle agents
6. fanout     1,000 watchers of one deployment: event delivery latency
7. footprint  idle control plane and a real `sami-agent --dry-run`: RSS
8. swarm      `sami deploy --wait` vs `docker service update --detach=false` (root + engine)
9. dashboard  the web overview of 200 services: server answer, first paint in chromium
10. pg-create     2 on PostgreSQL: calls/s, CPU a call of the control plane and of PostgreSQL
11. pg-lifecycle  3 on PostgreSQL with one and two replicas; the CPU PostgreSQL adds
12. pg-pickup     4 with the agents on replica B, the creates on replica A (200/s)
13. pg-watch      1,000 watchers on replica B of events stored by replica A
14. pg-idle       10,000 idle agents over two replicas: RSS, CPU, pickup meanwhile
15. notify        figure 3 with 3 webhook notification targets vs none, same run
16. drift         a manual `docker service update` -> the drift in GetStatus (root + engine)
17. status        1,000 agents reporting live status vs the same agents idle: RSS, CPU, reports/s
18. logs          `sami logs --tail N` vs `docker service logs --tail N`: lines/s (root + engine)
(10-14 need PostgreSQL's binaries, else they say skipped; a private cluster is started.)

Results: one table on stdout, bench/results/<full|quick>.json with the machine's details.
"""
