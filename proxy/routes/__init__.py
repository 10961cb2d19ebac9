"""HTTP handlers, one module per part of the surface; `proxy.app` wires them to paths."""
