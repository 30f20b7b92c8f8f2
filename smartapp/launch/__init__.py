"""Launch: the SMART on FHIR launch, its sessions, registrations, keys and tokens.

views.py (/launch, /callback, the start page, the JWKS) parses and renders; service.py does the
work without Flask (begin_authorization, complete_launch) over store.py (pending authorizations
and launch contexts); client.py speaks SMART (discovery, PKCE, token exchange, id_token);
sessions.py keeps access tokens fresh; registrations.py, keys.py, tokens.py, signer.py and
retention.py hold the EHR registrations, signing keys, token cipher, the signer's name and the
purge of old launches."""
