"""Usage per key: every verification counted by key, hour and result (counting.py), and read back (reading.py)."""
