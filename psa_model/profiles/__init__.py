"""User profiles: profile/embedding files, attribute schema, policies, Sage users, LLM encoder."""
