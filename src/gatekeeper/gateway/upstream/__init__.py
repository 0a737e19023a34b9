"""Upstream pools: endpoints, balancing, health, breakers, outliers, retries, admission,
keep-alive connections and forwarding."""
