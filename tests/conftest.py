"""Every in-process moto test sees DynamoDB's atomic conditional writes (local_stack.moto_server)."""

from local_stack.moto_server import make_dynamodb_writes_atomic

make_dynamodb_writes_atomic()
