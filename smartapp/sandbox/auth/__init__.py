"""SMART App Launch authorization server of the sandbox (authlib)."""
