"""The whole pipeline on one machine: moto server, local event-source runner, Lambda runtimes with their
timeouts, a local Batch stand-in (placement delay, adjustable capacity), SNS-like webhooks, and (faults/)
named, seeded fault injection with a runner that checks the promise's invariants."""
