"""Registered models (bring your own model) and the GPU workers' inference core.

torch-free modules (the API and dispatch import them): `spec` (ModelSpec), `registry`.
torch modules (the workers, bench and tests import them): `runner` (sliding windows), `models`
(loading, ModelCache), `processing` (grids, normalisation, label maps), `tasks`
(`run_model_tasks`, the workers' batch entry point). Nothing is imported here, so importing one
never pulls in torch through this package.
"""
