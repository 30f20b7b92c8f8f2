"""Writeback: the resources written to the EHR, the outbox and its worker."""
