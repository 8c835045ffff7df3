"""The dashboard: the /dashboard routes and what they do to keys (operations, imports, limits)."""
