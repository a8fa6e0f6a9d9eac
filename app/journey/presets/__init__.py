"""Built-in journey models, shipped as package data and read with `importlib.resources`."""
