"""The HTTP API (API Gateway HTTP API -> one Lambda): create a job with a presigned upload, read it, list, cancel.

handler.py (Powertools resolver, thin) -> jobs.py (plain logic) over common.lifecycle; models.py (pydantic, the
OpenAPI schema), problems.py (RFC 9457 errors), callers.py (who calls), openapi.py (the document and its check).
"""
