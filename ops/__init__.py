"""Host-side library behind tasks.py: engine, compose, settings, secrets, status, bench."""
