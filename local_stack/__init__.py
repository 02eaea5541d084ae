"""The whole pipeline on one machine (`upscaler local up`, `upscaler demo`, the end-to-end tests): a moto
server with the CDK stack's resources, the real Lambda handlers in their own processes (with Lambda's
timeouts) behind an SQS event-source runner, a Batch stand-in that places real worker processes (capacity
that can change, placement delay) with the EventBridge events the scaler reacts to, SNS-like signed webhook
delivery, the human job log, and (faults/) named, seeded AWS faults with a runner that checks the promise."""
