"""Prometheus metrics (`prometheus`), shared by the workers of one process group (`share`)."""
