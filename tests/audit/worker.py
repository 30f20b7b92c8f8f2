"""A separate OS process appending to the referral log (for the multi-process tests):

    python -m tests.audit.worker URL KEY_PEM LABEL COUNT START_AT EVERY [PAUSE]

Waits until the wall clock reaches START_AT (so the processes really overlap), then appends
COUNT events, one unit of work each (PAUSE seconds apart), all signed with the same key
file."""

from __future__ import annotations

import sys
import time

from smartapp.audit import chain
from smartapp.audit import log as referral_log
from smartapp.audit.signing import load_signer
from smartapp.db import Database


def main(
    url: str, key: str, label: str, count: int, start_at: float, every: int, pause: float
) -> None:
    db = Database(url)
    chain.configure(db, signer=load_signer(key), every=every)
    with db.session() as session:  # connect before the start line, not after it
        session.connection()
    time.sleep(max(0.0, start_at - time.time()))
    for i in range(count):
        with db.session() as session:
            referral_log.append(
                session,
                "suggestions-shown",
                user_ref=f"Practitioner/{label}",
                patient_id=f"{label}-{i}",
                data={"worker": label, "i": i},
            )
        if pause:
            time.sleep(pause)  # a page view's worth of other work between appends
    db.engine.dispose()


if __name__ == "__main__":
    url, key, label, count, start_at, every = sys.argv[1:7]
    pause = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    main(url, key, label, int(count), float(start_at), int(every), pause)
