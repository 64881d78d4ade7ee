"""tako orchestrators."""
