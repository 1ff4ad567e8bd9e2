"""The admin page (/admin) and the JSON API behind it (/admin/api): sign-in, bots, the changes log."""
