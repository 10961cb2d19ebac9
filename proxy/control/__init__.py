"""The control plane: provider registration, budgets, catalogs, models, the usage report and the
dashboard, health and metrics, the OpenAPI document. Behind the admin key where they change state."""
