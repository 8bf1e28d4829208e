"""The scoring service, deployable on its own (AzureML entry script: service/score.py).

A deployment ships exactly ``SHIPPED``, paths relative to the repository root: this folder, with
the entry script, the model (model/), the pinned requirements (requirements.txt) and shared/,
the scheme specs and SEAL layers that the client in lib/ imports from here. Nothing under
service/ imports lib/; tests/test_service_alone.py runs a copy of ``SHIPPED`` alone to prove it.
"""

SHIPPED: tuple[str, ...] = ("service",)
