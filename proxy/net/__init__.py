"""Outbound networking every caller shares: the HTTP/1.1 client, egress proxies and TLS, the
CONNECT tunnel, the SSRF guard, and the HTTP facts both clients read."""
