"""One construct per component of the pipeline; the stack (infra/stack.py) wires them together."""
