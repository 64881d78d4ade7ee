"""tako tools."""
