"""What every Python service shares: bootstrap, health, reflection, logging,
interceptors and google.rpc status helpers (see docs/conventions.md)."""
