"""The edge: the HTTP server's own defences, admission (fast 503s), drain on SIGTERM, worker processes.

Nothing here knows a route; the pipeline uses the admission and the server's answers."""
