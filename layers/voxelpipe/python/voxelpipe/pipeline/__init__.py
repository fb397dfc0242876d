"""The pipeline's steps as functions of their inputs: what each handler calls.

They use the adapters and status tracking but know nothing of Lambda events.
"""
