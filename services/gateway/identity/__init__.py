"""Identity: organizations, users, members and roles, API tokens, and who is calling."""
