"""dalle-pipe: a declarative pipeline runner for OpenAI image generation."""

__version__ = "0.1.0"
