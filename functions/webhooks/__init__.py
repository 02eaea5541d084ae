"""Webhook delivery Lambda: the notification topic -> SQS -> POST to each job's own webhook URL.

`signing` (Standard Webhooks v1 signatures), `sender` (one HTTP POST to checked addresses only),
`delivery` (one attempt: the job's URL and event filter, the SSRF rules, the receiver's answer), `retry`
(retry, give up or done, by the message's age and receive count), `handler` (SQS batch, partial failures).
docs/webhooks.md describes the whole.
"""
