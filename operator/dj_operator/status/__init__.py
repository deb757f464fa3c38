"""The job's status: derived from what is observed (derive, attempts, times) and read back into figures (reader)."""
