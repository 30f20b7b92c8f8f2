"""Launch: the SMART on FHIR launch, its sessions, registrations, keys and tokens."""
