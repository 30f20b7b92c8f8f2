"""FHIR: the client that reads the patient's chart from the EHR and posts writes."""
