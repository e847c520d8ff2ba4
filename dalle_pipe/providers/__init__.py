"""Providers: the narrow door every image request goes through."""
