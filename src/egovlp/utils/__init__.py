"""Small shared utilities (logging, safe file loading)."""
