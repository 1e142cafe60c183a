"""Interactive shell and HTTP client for the recommendation service (`python main.py shell`)."""
