"""Real-part test helpers: loopback servers, gateway processes, Redis, OpenAI schemas."""
