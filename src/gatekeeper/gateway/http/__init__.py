"""The HTTP/1.1 layer: the listener, the client connection, messages, tunnels and TLS.

It knows nothing of routes, limits or upstreams: the server hands each parsed request to a
handler (the flow) and the handler answers through the connection.
"""
