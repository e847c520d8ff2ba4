"""The engine: what every command decides and makes, in one place (see the README's "One engine")."""
