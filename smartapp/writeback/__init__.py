"""Writeback: what Handoff writes to the EHR, the outbox that writes it, and its worker.

- `resources`: a signed referral -> the typed plan (`plan_writes`) per write profile; the
  names callers import (SignedReferral, ItemDecision, WriteSettings, build_plan, ...).
- `referral`: the signed decision and the site's write settings; stable identifiers.
- `shapes`: one builder per FHIR resource, with the security labels (42 CFR Part 2).
- `note`: the linkage note's text.
- `plan`: `WritePlan` and its operations; the JSON column's only (de)serialiser.
- `profiles`: what each EHR takes (fhir-rest, epic, oracle-health).
- `outbox`: the queue (submit, lease, retry backoff, deliver, enqueue_task_update).
- `rows`: the delivery's statements on a referral row (lease claim, locked read, record).
- `writers`: transaction, one by one (search first), then the follow-ups in order.
- `task_update`: a change to the handoff (who acted, status, businessStatus, reason, output,
  note) merged onto the Task as the EHR holds it (only our fields); the follow-ups it queues.
- `versioned`: a PUT with If-Match on the version it was based on; on a conflict, re-read and
  re-apply (or find our earlier PUT already landed).
- `business_status`: the businessStatus steps, as data (catalog/lifecycle.yaml).
- `actor`: who acted (Provenance agents, log events).
- `worker`: delivers queued referrals (a process or a thread).
"""
