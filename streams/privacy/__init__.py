"""Privacy rights as plain data: requests, erasure of a profile, the suppression list."""
