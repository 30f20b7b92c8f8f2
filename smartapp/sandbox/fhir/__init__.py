"""The sandbox's FHIR R4 server: storage, search, bundles and the REST blueprint."""
