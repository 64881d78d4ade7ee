"""tako policies."""
