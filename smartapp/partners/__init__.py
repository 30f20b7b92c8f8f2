"""Community partners: organisations whose programs receive referrals the patient consented to
share, read them on Handoff's partner FHIR API or web page, and report linkage back (issue 11)."""
