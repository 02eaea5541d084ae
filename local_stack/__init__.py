"""The whole pipeline on one machine: moto server, local event-source runner, local job queue, webhooks."""
