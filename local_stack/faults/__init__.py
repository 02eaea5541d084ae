"""Named, seeded faults for the local stack, and a runner that checks the promise's invariants after them.

One module per job: `operations` (which AWS call a request is, and AWS's error shapes), `proxy` (an HTTP
proxy per process in front of the emulator that injects a fault into a matching call), `injector` (the
armed faults: proxy rules, log triggers, kills, spot reclaims, capacity), `worker_log` (what the workers'
JSON logs say: claims, inferences, crashes), `catalogue` (every fault by name, faithful to what AWS does),
`schedule` (which upload gets which fault, from a seed), `worker` (the worker entry point with a skewed
clock or a poison image), `invariants` (the promise, checked on a run's history) and `runner` (drives
uploads through the whole pipeline under a schedule and collects that history).
"""
