"""Chat platforms: each turns its events into ImageJobs and answers through its own sink."""
