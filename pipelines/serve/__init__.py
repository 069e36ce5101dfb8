"""Serving: the chat model on Ray Serve (OpenAI-compatible API, streaming, continuous batching, a chat page)."""
