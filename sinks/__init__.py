"""Where results go. One module per service; each sink is configured by one URL (apprise style)."""
