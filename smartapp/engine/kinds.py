"""The suggestion kinds: stable names that tests, logs, the referral log and the EHR writes
depend on (``/work/shared/spec/clinical-rules.md``, "Suggestions"). A pack's rules name
their kind in data; code that treats a kind specially names it through these constants,
never as a string literal of its own."""

from __future__ import annotations

#: A peer recovery coach consult (opt-out: accepted unless the physician declines).
PRC_CONSULT = "prc-consult"
#: Buprenorphine for opioid use disorder (variants ``ed-induction``, ``home-initiation``).
MOUD_BUPRENORPHINE = "moud-buprenorphine"
#: Continue the medication for OUD the patient is on (opt-out).
MOUD_CONTINUE = "moud-continue"
#: A take-home naloxone kit.
NALOXONE_KIT = "naloxone-kit"

#: Every kind, in the order the spec lists them.
KINDS = (PRC_CONSULT, MOUD_BUPRENORPHINE, MOUD_CONTINUE, NALOXONE_KIT)
#: Kinds whose evidence is opioid-specific (the decision carries the OPIOIDUD label).
OPIOID_KINDS = frozenset({MOUD_BUPRENORPHINE, MOUD_CONTINUE, NALOXONE_KIT})
#: Opt-out kinds: shown accepted, so that nothing but the physician's decline drops them.
OPT_OUT_KINDS = frozenset({PRC_CONSULT, MOUD_CONTINUE})
