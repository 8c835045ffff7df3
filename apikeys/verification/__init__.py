"""Verification, the product's heart: the check order (core), the Flask extension, and /verify over HTTP."""
