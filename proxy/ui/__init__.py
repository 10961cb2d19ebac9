"""The usage and savings dashboard's static files (served by `proxy.control.ui`; no build step)."""
