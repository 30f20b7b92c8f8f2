"""After Sign: amend the signed coach referral (`amend`) and the patient's discharge sheet
(`sheet`, `pdf`), with their routes in `views` (keyed by the launch context, like the
screen's)."""
