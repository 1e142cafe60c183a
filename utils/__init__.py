"""Small shared utilities (the cache)."""
