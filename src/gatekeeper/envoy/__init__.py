"""Gatekeeper behind Envoy: its rate limit service (``ShouldRateLimit``) and external
authorization (``Check``) over gRPC, served by ``gatekeeper serve`` beside HTTP.

Modules: :mod:`.config` (the ``envoy:`` section), :mod:`.descriptors` (the compiled descriptor
trees), :mod:`.rls` and :mod:`.authz` (the servicers), :mod:`.server` (the gRPC listener and
health), :mod:`.component` (the component). See ``docs/envoy.md``.
"""
