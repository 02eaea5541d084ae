"""Shared by every part of the service: contract, settings, AWS clients, job record, submit, notify.

Importable by the intake/notifier Lambda bundle, the GPU worker image, the local stack and the tests.
Nothing here imports from functions/, gpu_batch/, infra/ or local_stack/.
"""
