"""The operator API's routes, one router per resource (``app.py`` includes them all)."""
