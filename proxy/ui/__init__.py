"""The usage and savings dashboard's static files (served by `proxy.routes.ui`; no build step)."""
