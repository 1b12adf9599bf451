"""Experiments of the paper beyond the main tables (e.g. section 6.2, search error)."""
