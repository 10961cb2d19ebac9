"""The way out to providers: dispatch and failover, the router and its circuits, the registry
of provider items, the retry budget, provider keys at rest, and each request's attempts."""
