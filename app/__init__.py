"""tako app."""
