"""tako runtime."""
