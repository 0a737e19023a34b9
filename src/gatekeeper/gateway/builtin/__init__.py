"""The gateway's own endpoints and configuration reloading."""
