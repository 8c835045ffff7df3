"""pytest plugin (see issue 4)."""
