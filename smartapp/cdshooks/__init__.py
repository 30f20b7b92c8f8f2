"""CDS Hooks 2.0 services (issue 14): discovery, hook calls, cards, feedback, security."""
