"""The built-in web dashboard: a single-page app in ``static/``, served at ``/dashboard/``."""
