"""Fake upstreams for the tests: real aiohttp servers on port 0 speaking the providers' wires."""
