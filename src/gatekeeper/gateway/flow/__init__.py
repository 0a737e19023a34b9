"""The request path: the ordered steps a proxied request goes through, and the route table."""
