"""Small adapters between the domain and AWS services."""
